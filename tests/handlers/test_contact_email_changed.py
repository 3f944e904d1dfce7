from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import orjson
import pytest

from handlers.contact_email_changed import mark_email_unverified, router
from shared import DataverseClient, parse_context
from tests.conftest import context_bytes
from tests.dataverse_doubles import emulated_client
from tools.emulator import DataverseEmulator

CONTACT = UUID("c0000000-0000-4000-8000-000000000007")


@pytest.fixture
def emulator() -> DataverseEmulator:
    return DataverseEmulator()


@pytest.fixture
async def dataverse(emulator: DataverseEmulator) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator) as client:
        await client.upsert("contacts", CONTACT, {"contoso_emailverified": True})
        yield client


async def test_a_changed_email_marks_the_contact_unverified(
    dataverse: DataverseClient, emulator: DataverseEmulator
) -> None:
    await mark_email_unverified(parse_context(context_bytes("contact-update.json")), dataverse)
    (contact,) = emulator.rows("contacts")
    assert contact["contoso_emailverified"] is False
    assert contact["contoso_emailchangedon"] == "2017-09-26T07:04:08+00:00"
    assert emulator.writes()[-1].tag  # our tag, so the echo is recognised


async def test_the_same_email_written_again_changes_nothing(
    dataverse: DataverseClient, emulator: DataverseEmulator
) -> None:
    tree = orjson.loads(context_bytes("contact-update.json"))
    tree["PreEntityImages"][0]["value"]["Attributes"][0]["value"] = "nancy@example.com"
    writes = len(emulator.writes())
    await mark_email_unverified(parse_context(orjson.dumps(tree)), dataverse)
    assert len(emulator.writes()) == writes


def test_it_is_routed_only_for_email_changes() -> None:
    (route,) = router.routes
    assert (route.entity, route.message, route.attributes) == (
        "contact",
        "update",
        frozenset({"emailaddress1"}),
    )
    update = parse_context(context_bytes("contact-update.json"))
    assert route.accepts_target(update)
    tree = orjson.loads(context_bytes("contact-update.json"))
    tree["InputParameters"][0]["value"]["Attributes"] = [{"key": "telephone1", "value": "1"}]
    assert not route.accepts_target(parse_context(orjson.dumps(tree)))
