"""No column values in logs or dead-letter descriptions unless LOG_ATTRIBUTE_VALUES is on
(issue: trust boundaries). Each case leaked a value before."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from shared import observability
from shared.context import parse_context
from shared.dataverse import DataverseClient
from shared.dispatch import DeadLetter, Dispatcher
from shared.errors import InvalidMessage, NotFound
from shared.redaction import printable, redact
from shared.routing import Router
from shared.settings import Settings
from tests.dataverse_doubles import emulated_client
from tests.events import ORGANIZATION_ID, event
from tools.emulator import DataverseEmulator

SECRET = "nancy@example.com"


@pytest.fixture(autouse=True)
def values_hidden() -> Iterator[None]:
    observability.quiet_libraries()
    observability.allow_values(False)
    yield
    observability.allow_values(False)


@pytest.fixture
def emulator() -> DataverseEmulator:
    emulator = DataverseEmulator()
    emulator.add_table("contoso_invoice", alternate_keys=(("contoso_number",),))
    return emulator


async def test_request_urls_with_filter_literals_stay_out_of_the_logs(
    emulator: DataverseEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with emulated_client(emulator) as client:
        await client.first("contacts", filter=f"emailaddress1 eq '{SECRET}'")
    assert SECRET not in caplog.text
    assert "nancy" not in caplog.text


async def test_dataverse_errors_redact_key_values_and_messages(
    emulator: DataverseEmulator,
) -> None:
    async with emulated_client(emulator) as client:
        with pytest.raises(NotFound) as caught:
            await client.upsert(
                "contoso_invoices", {"contoso_number": SECRET}, {"name": "x"}, mode="update_only"
            )
    text = str(caught.value)
    assert "HTTP 404" in text
    assert "contoso_invoices" in text  # the table stays: it is what an operator needs
    assert "nancy" not in text
    observability.allow_values(True)
    assert "nancy" in str(caught.value)  # the one switch turns values on


def test_redact_removes_quoted_literals_and_query_strings() -> None:
    assert redact("contoso_email='it''s@x' Does Not Exist") == "contoso_email='***' Does Not Exist"
    assert redact("(GET contacts?$filter=emailaddress1%20eq%20%27a%27)") == "(GET contacts?***)"
    assert printable("a\nb\x00" + "x" * 100, limit=10).startswith("a\\nb\\x00")


async def test_a_dead_letter_description_carries_no_value_from_dataverse(
    emulator: DataverseEmulator,
) -> None:
    router = Router()

    @router.on(entity="account")
    async def look_up(context: Any, dataverse: DataverseClient) -> None:
        await dataverse.update("contoso_invoices", {"contoso_number": SECRET}, {"name": "x"})

    async with emulated_client(emulator) as client:
        settings = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))
        outcome = await Dispatcher(router, client, settings).process(event())
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "DataverseRejected"
    assert "nancy" not in outcome.description


def test_decoder_errors_describe_the_value_instead_of_showing_it() -> None:
    tree = orjson.loads(event().body)
    tree["OperationId"] = SECRET
    context = parse_context(orjson.dumps(tree), "application/json")
    with pytest.raises(InvalidMessage) as caught:
        _ = context.operation_id
    assert "nancy" not in str(caught.value)
    assert "a str, 17 long" in str(caught.value)
