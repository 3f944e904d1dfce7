"""The emulator posts in all three message formats, and each decodes, value by value, to what
Microsoft's serializers write for the same context.

tests/fixtures/emulator/*.json are contexts the emulator posted (tools/fixturegen/
emulator_contexts.py); the .xml, .msbin1 and .dictionary.msbin1 beside them were written from
that JSON by DataContractSerializer and the .NET binary XML writer (tools/fixturegen/generate.sh,
on Mono). The emulator's own writers (tools/emulator/formats.py) must agree with them.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from shared.context import parse_context
from shared.dataverse import DataverseClient
from shared.registration import load_environment
from tests.registration import REGISTRATION_HANDLERS, environment, sas_key
from tools.emulator import AnyToken, DataverseEmulator
from tools.emulator.formats import to_binary, to_xml
from tools.endpoints import reconcile

EMULATOR_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "emulator"
STEMS = sorted(path.stem for path in EMULATOR_FIXTURES.glob("*.json"))
MICROSOFT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contexts"


def test_the_fixtures_cover_create_update_and_delete() -> None:
    assert STEMS == ["account-create", "contact-delete", "contact-update"]


@pytest.mark.parametrize("stem", STEMS)
def test_the_emulators_xml_and_binary_decode_as_microsofts_serializers_output(stem: str) -> None:
    json_body = (EMULATOR_FIXTURES / f"{stem}.json").read_bytes()
    from_json = parse_context(json_body, "application/json").validate()
    ours_xml = to_xml(orjson.loads(json_body))
    ours_binary = to_binary(ours_xml)
    microsoft = {
        suffix: parse_context(
            (EMULATOR_FIXTURES / f"{stem}{suffix}").read_bytes(), content_type
        ).validate()
        for suffix, content_type in (
            (".xml", "application/xml"),
            (".msbin1", "application/msbin1"),
            (".dictionary.msbin1", "application/msbin1"),
        )
    }
    assert parse_context(ours_xml, "application/xml").validate() == microsoft[".xml"]
    assert parse_context(ours_binary, "application/msbin1").validate() == microsoft[".msbin1"]
    assert microsoft[".dictionary.msbin1"] == from_json
    assert microsoft[".xml"] == from_json


@pytest.mark.parametrize("stem", ["contact-delete", "account-update-truncated"])
def test_the_writers_agree_with_microsofts_fixtures_of_the_types_they_write(stem: str) -> None:
    body = (MICROSOFT_FIXTURES / f"{stem}.json").read_bytes()
    ours_xml = to_xml(orjson.loads(body))
    theirs_xml = (MICROSOFT_FIXTURES / f"{stem}.xml").read_bytes()
    theirs_binary = (MICROSOFT_FIXTURES / f"{stem}.msbin1").read_bytes()
    assert parse_context(ours_xml).validate() == parse_context(theirs_xml).validate()
    assert (
        parse_context(to_binary(ours_xml), "application/msbin1").validate()
        == parse_context(theirs_binary, "application/msbin1").validate()
    )


@pytest.mark.parametrize(
    ("message_format", "content_type"), [(1, "application/msbin1"), (3, "application/xml")]
)
async def test_an_endpoint_in_another_format_is_posted_in_it(
    message_format: int, content_type: str
) -> None:
    emulator: DataverseEmulator = environment()
    async with DataverseClient(
        "https://contoso.crm.dynamics.com",
        auth=AnyToken("pipeline"),
        transport=httpx.ASGITransport(app=emulator),
    ) as client:
        spec = load_environment("dev", handlers=REGISTRATION_HANDLERS)
        await reconcile(client, spec, apply=True, sas_key=sas_key)
        (row,), _ = zip(*emulator.store.all("serviceendpoints"), strict=True)
        row["messageformat"] = message_format
        emulator.store.put("serviceendpoints", row["serviceendpointid"], row)
        contact = await client.create("contacts", {"lastname": "D", "emailaddress1": "a@b.c"})
        await client.update("contacts", contact, {"emailaddress1": "d@b.c"})
    (message,) = emulator.broker.queues["dataverse-events"]
    assert message.content_type == content_type
    context = parse_context(message.body, content_type)
    assert context.pre_entity_images["PreImage"]["emailaddress1"] == "a@b.c"
    assert context.post_entity_images["PostImage"]["emailaddress1"] == "d@b.c"
    context.validate()
