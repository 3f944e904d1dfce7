"""Hostile XML bodies through `parse_context` and the dispatcher, as the triggers see them
(issue: trust boundaries). A UTF-16 body hid its DTD from a byte search, and an internal entity
expanded 208 KiB into 8.6 M characters."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from shared.context import parse_context
from shared.dispatch import DeadLetter, Dispatcher
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.routing import Router
from shared.settings import Settings
from tests.events import ORGANIZATION_ID

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "contexts" / "account-create.xml"
XML = "application/xml"


def entity_bomb(encoding: str, copies: int = 2000) -> bytes:
    """A context whose Target name is an internal entity repeated `copies` times, each 1 KiB:
    about `copies` KiB once expanded, from a body of a few KiB."""
    text = FIXTURE.read_bytes().decode("utf-8")
    text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    refs = "&big;" * copies
    doctype = f'<!DOCTYPE RemoteExecutionContext [<!ENTITY big "{"x" * 1024}">]>'
    head = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding != "none" else ""
    body = head + doctype + text.replace("Northwind Traders", refs, 1)
    codec = {"none": "utf-8", "UTF-16": "utf-16", "UTF-16LE": "utf-16-le"}.get(encoding, encoding)
    return body.encode(codec)


@pytest.mark.parametrize("encoding", ["UTF-8", "none", "UTF-16", "UTF-16LE", "ISO-8859-1"])
def test_a_dtd_is_refused_in_every_encoding_before_anything_expands(encoding: str) -> None:
    body = entity_bomb(encoding)
    tracemalloc.start()
    with pytest.raises(InvalidMessage) as caught:
        _ = parse_context(body, XML).primary_entity_name
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.reason == "InvalidXml"
    assert "DTD" in caught.value.message
    assert peak < 20 * len(body) + 1_000_000, f"{peak} bytes for a {len(body)}-byte body"


def test_a_utf32_body_is_refused_as_unreadable_not_decoded() -> None:
    body = entity_bomb("UTF-16").decode("utf-16").replace("UTF-16", "UTF-32").encode("utf-32")
    with pytest.raises(InvalidMessage) as caught:
        _ = parse_context(body, XML).primary_entity_name
    assert caught.value.reason in {"InvalidXml", "InvalidEncoding"}


async def test_the_dispatcher_dead_letters_a_utf16_entity_bomb() -> None:
    settings = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))
    dispatcher = Dispatcher(Router(), lambda: None, settings)  # type: ignore[arg-type, return-value]
    event = DataverseEvent(body=entity_bomb("UTF-16"), content_type=XML, transport="servicebus")
    outcome = await dispatcher.process(event)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "InvalidXml"
    assert "DTD" in outcome.description


def test_a_utf16_context_without_a_dtd_still_decodes() -> None:
    text = FIXTURE.read_bytes().decode("utf-8")
    text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    body = ('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16")
    assert parse_context(body, XML).primary_entity_name == "account"
