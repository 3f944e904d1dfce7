"""Property-based: whatever a mutated body holds, decoding raises InvalidMessage or succeeds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.context import parse_context
from shared.context.binary_reader import MAX_ARRAY_ITEMS
from shared.errors import InvalidMessage
from tests.conftest import CONTEXTS
from tools.emulator.formats import mb31

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


# --- encodings and Array records, with memory bounded by the body ------------------------------

XML_TEXTS = [path.read_text("utf-8") for path in sorted(CONTEXTS.glob("*.xml"))]
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
# The decoders' stated bound: peak traced memory while decoding is at most this many bytes per
# byte of body (the fixtures measure 7-18) plus a fixed allowance, and for .NET binary a fixed
# cost per Array item, whose count per body is bounded (MAX_ARRAY_ITEMS). What expands (an
# entity, an array of a million booleans) breaks it at once.
BYTES_PER_BODY_BYTE = 32
FIXED_ALLOWANCE = 256 * 1024
BYTES_PER_ARRAY_ITEM = 200


def decode_within_memory(body: bytes, content_type: str | None, allowance: int) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        decode_fully(body, content_type)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= BYTES_PER_BODY_BYTE * len(body) + allowance, (peak, len(body))


def reencoded(text: str, encoding: str, prolog: str = "") -> bytes:
    """The context in `encoding`, with a declaration naming it and an optional DTD after it."""
    declared = "-".join(encoding.split("-")[:2])  # utf-16-le is declared utf-16
    return (f'<?xml version="1.0" encoding="{declared}"?>' + prolog + text).encode(encoding)


# Nested internal entities: 64 x 32 x 32 = 64 Ki characters per reference of &c;.
ENTITIES = (
    '<!DOCTYPE a [<!ENTITY a "' + "x" * 64 + '">'
    '<!ENTITY b "' + "&a;" * 32 + '"><!ENTITY c "' + "&b;" * 32 + '">]>'
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(XML_TEXTS), st.sampled_from(ENCODINGS), st.data())
def test_xml_in_wide_encodings_decodes_or_refuses_within_memory(
    text: str, encoding: str, data: st.DataObject
) -> None:
    prolog = ""
    if data.draw(st.booleans(), label="entity bomb"):
        prolog = ENTITIES
        references = "&c;" * data.draw(st.integers(1, 64))
        text = text.replace("</MessageName>", references + "</MessageName>", 1)
    body = reencoded(text, encoding, prolog)
    if data.draw(st.booleans(), label="mutated"):
        body = mutate(body, data, steps=4)
    content_type = data.draw(st.sampled_from([None, "application/xml"]))
    decode_within_memory(body, content_type, FIXED_ALLOWANCE)


ARRAY_ITEM_SIZES = {0xB5: 1, 0x8B: 2, 0x8D: 4, 0x8F: 8, 0x91: 4, 0x93: 8, 0x97: 8, 0xAF: 8}


@st.composite
def array_records(draw: st.DrawFn) -> bytes:
    """One Array record (a short element, EndElement, a value type, a count, the values), most
    of them booleans, the type that expands most per byte of body."""
    kind = draw(st.sampled_from([0xB5, 0xB5, 0xB5, *ARRAY_ITEM_SIZES]))
    count = draw(st.integers(0, 400_000))
    return (
        b"\x03\x40\x01v\x01"
        + bytes([kind])
        + mb31(count)
        + b"\x00" * (count * ARRAY_ITEM_SIZES[kind])
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([None, *BINARY]), st.lists(array_records(), min_size=1, max_size=3), st.data()
)
def test_binary_with_array_records_decodes_or_refuses_within_memory(
    body: bytes | None, arrays: list[bytes], data: st.DataObject
) -> None:
    if body is None:  # arrays in a root element: the structure is valid, only the size bites
        spliced = b"\x40\x01r" + b"".join(arrays) + b"\x01"
    else:  # arrays anywhere in a real context, where most land mid-record
        buffer = bytearray(body)
        for array in arrays:
            position = data.draw(st.integers(0, len(buffer)))
            buffer[position:position] = array
        spliced = bytes(buffer)
    allowance = FIXED_ALLOWANCE + BYTES_PER_ARRAY_ITEM * MAX_ARRAY_ITEMS
    decode_within_memory(spliced, "application/msbin1", allowance)
