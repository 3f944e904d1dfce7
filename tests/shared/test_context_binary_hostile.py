"""Array records through `parse_context` and the dispatcher (issue: trust boundaries): a 977 KiB
body of bools became about a million elements, 117 MiB and 3.8 s on the event loop."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from shared.context import parse_context
from shared.context.binary_reader import MAX_ARRAY_ITEMS, read_binary
from shared.dispatch import DeadLetter, Dispatcher
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.routing import Router
from shared.settings import Settings
from tests.events import ORGANIZATION_ID

BINARY = "application/msbin1"


def chars(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


def mb31(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def bool_arrays(count: int, arrays: int = 1) -> bytes:
    """<RemoteExecutionContext> holding `arrays` Array records of `count` bools each."""
    array = b"\x03\x40" + chars("b") + b"\x01\xb5" + mb31(count) + b"\x01" * count
    return b"\x40" + chars("RemoteExecutionContext") + array * arrays + b"\x01"


@pytest.mark.parametrize(("count", "arrays"), [(1_000_000, 1), (40_000, 25)])
def test_array_items_are_bounded_in_memory_and_time(count: int, arrays: int) -> None:
    body = bool_arrays(count, arrays)
    tracemalloc.start()
    started = time.process_time()
    with pytest.raises(InvalidMessage) as caught:
        _ = parse_context(body, BINARY).primary_entity_name
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.reason == "InvalidBinaryXml"
    assert f"more than {MAX_ARRAY_ITEMS} values" in caught.value.message
    # At most MAX_ARRAY_ITEMS elements are ever built: about 150 bytes each, plus the body.
    assert peak < 16 * 1024 * 1024, peak
    assert cpu < 1.0, cpu


def test_arrays_a_context_uses_still_decode() -> None:
    root = read_binary(bool_arrays(500, 2))
    assert [child.tag for child in root] == ["b"] * 1000


async def test_the_dispatcher_dead_letters_an_array_bomb() -> None:
    settings = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))
    dispatcher = Dispatcher(Router(), lambda: None, settings)  # type: ignore[arg-type, return-value]
    event = DataverseEvent(body=bool_arrays(1_000_000), content_type=BINARY)
    outcome = await dispatcher.process(event)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "InvalidBinaryXml"
