"""Property-based: whatever a mutated body holds, decoding raises InvalidMessage or succeeds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.context import parse_context
from shared.errors import InvalidMessage
from tests.conftest import CONTEXTS

BODIES = [path.read_bytes() for path in sorted(CONTEXTS.glob("*.json"))] + [
    path.read_bytes() for path in sorted(CONTEXTS.glob("*.xml"))
]
BINARY = [path.read_bytes() for path in sorted(CONTEXTS.glob("*.msbin1"))]
TREES = [json.loads(path.read_bytes()) for path in sorted(CONTEXTS.glob("*.json"))]

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_fully(body: bytes, content_type: str | None = None) -> None:
    """Decoding either succeeds or raises InvalidMessage with a known reason; any other
    exception fails the test."""
    failure: InvalidMessage | None = None
    try:
        parse_context(body, content_type).validate()
    except InvalidMessage as error:
        failure = error
    if failure is not None:
        assert failure.reason in InvalidMessage.REASONS
        assert failure.message


def mutate(body: bytes, data: st.DataObject, *, steps: int) -> bytes:
    """Up to `steps` byte-level edits: flips, deletions, insertions, truncation."""
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, steps))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            mutated[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del mutated[position]
        elif action == "insert":
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=5))
        else:
            del mutated[position:]
        if not mutated:
            break
    return bytes(mutated)


@fuzz
@given(st.sampled_from(BODIES), st.data())
def test_byte_mutations_raise_only_invalid_message(body: bytes, data: st.DataObject) -> None:
    mutated = mutate(body, data, steps=8)
    content_type = data.draw(st.sampled_from([None, "application/json", "application/xml"]))
    decode_fully(mutated, content_type)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(
        ["/Date(1)/", "/Date(99999999999999999)/", "00000000-0000-0000-0000-00000000000x"]
    ),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["__type", "Value", "Id", "LogicalName", "key", "value", "Attributes", "Entities"]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, item in tree.items():
            found += paths(item, (*prefix, key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            found += paths(item, (*prefix, index))
    return found


@fuzz
@given(st.sampled_from(range(len(TREES))), st.data(), json_values)
def test_structural_mutations_raise_only_invalid_message(
    which: int, data: st.DataObject, replacement: Any
) -> None:
    tree = json.loads(json.dumps(TREES[which]))
    path = data.draw(st.sampled_from(paths(tree)[1:]))
    holder = tree
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = replacement
    decode_fully(json.dumps(tree).encode())


@settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BINARY), st.data())
def test_binary_mutations_raise_only_invalid_message_quickly(
    body: bytes, data: st.DataObject
) -> None:
    """Flipped bytes land on record types, lengths, counts and dictionary ids alike; each
    example must finish within the deadline (no runaway loop, no huge allocation)."""
    mutated = mutate(body, data, steps=6)
    decode_fully(mutated, data.draw(st.sampled_from([None, "application/msbin1"])))


def test_hostile_binary_lengths_allocate_nothing_large() -> None:
    import tracemalloc

    hostile = [
        b"\x40\x01a\x9d\xff\xff\xff\x7f",  # Chars32Text claiming 2 GiB
        b"\x40\x01a\xa3\xff\xff\xff\x7f",  # Bytes32Text claiming 2 GiB
        b"\x03\x40\x01i\x01\x8f\xff\xff\xff\xff\x07",  # an Array of 2^31 Int64 values
        b"\x40\xff\xff\xff\xff\x07",  # an element name of 2^31 bytes
        b"\x40\x01a" + b"\xa4" * 100_000,  # lists that never end
    ]
    tracemalloc.start()
    for body in hostile:
        decode_fully(body, "application/msbin1")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
