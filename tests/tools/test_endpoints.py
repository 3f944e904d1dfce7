"""Endpoints and steps as code, reconciled against the emulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.dataverse import DataverseClient
from shared.registration import EnvironmentSpec, SpecError, load_environment
from shared.vault import read_vault_secret, secret_url, vault_scope
from tests.dataverse_doubles import TokenIssuer, emulated_client
from tests.registration import REGISTRATION_HANDLERS, environment, sas_key
from tools.emulator import DataverseEmulator
from tools.endpoints import reconcile


@pytest.fixture
def emulator() -> DataverseEmulator:
    return environment()


@pytest.fixture
async def client(emulator: DataverseEmulator) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator) as client:
        yield client


@pytest.fixture
def spec() -> EnvironmentSpec:
    return load_environment("dev", handlers=REGISTRATION_HANDLERS)


async def test_plan_on_an_empty_environment_lists_everything_and_writes_nothing(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    report = await reconcile(client, spec, apply=False, sas_key=sas_key)
    assert report.changes == [
        "+ serviceendpoint contoso-events (queue sb-contoso-events-dev/dataverse-events, json)",
        # derived from the routes, in the order the handlers were discovered
        "+ step 'contoso-events: Update of contact' (stage 40, mode 1, filtering emailaddress1)",
        "+ image PreImage on 'contoso-events: Update of contact' (pre)",
        "+ image PostImage on 'contoso-events: Update of contact' (post)",
        "+ step 'contoso-events: Create of account' (stage 40, mode 1)",
        # declared in the environment file
        "+ step 'contoso-events: Delete of contact' (stage 40, mode 1)",
        "+ image AsynchronousStepPrimaryName on 'contoso-events: Delete of contact' (pre)",
    ]
    assert emulator.writes() == []


async def test_apply_creates_it_and_a_second_apply_changes_nothing(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    first = await reconcile(client, spec, apply=True, sas_key=sas_key)
    assert len(first.changes) == 7
    (endpoint,) = emulator.rows("serviceendpoints")
    assert endpoint["messageformat"] == 2  # JSON
    assert endpoint["contract"] == 6
    assert endpoint["issaskeyset"] is True
    assert "saskey" not in endpoint  # write-only, as in Dataverse
    steps = emulator.rows("sdkmessageprocessingsteps")
    assert {step["_eventhandler_value"] for step in steps} == {endpoint["serviceendpointid"]}
    assert all(step["_sdkmessagefilterid_value"] for step in steps)
    images = emulator.rows("sdkmessageprocessingstepimages")
    assert sorted(image["name"] for image in images) == [
        "AsynchronousStepPrimaryName",
        "PostImage",
        "PreImage",
    ]
    assert all(
        request.headers.get("mscrm.solutionuniquename") == "ContosoEvents"
        for request in emulator.writes()
    )
    writes = len(emulator.writes())
    second = await reconcile(client, spec, apply=True, sas_key=sas_key)
    assert second.changes == []
    assert second.notes == ["= serviceendpoint contoso-events: SAS key re-applied"]
    # The only write is the SAS key, re-applied on purpose every time.
    new_writes = emulator.writes()[writes:]
    assert len(new_writes) == 1
    assert b"saskey" in new_writes[0].body


async def test_a_changed_step_is_updated_and_a_disabled_one_re_enabled(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    await reconcile(client, spec, apply=True, sas_key=sas_key)
    create_step = next(
        step for step in emulator.rows("sdkmessageprocessingsteps") if "Create" in step["name"]
    )
    await client.update(
        "sdkmessageprocessingsteps",
        create_step["sdkmessageprocessingstepid"],
        {"statecode": 1, "statuscode": 2},  # someone disabled it
    )
    endpoint = spec.endpoints[0]
    steps = tuple(
        dataclasses.replace(step, filtering_attributes=("emailaddress1", "telephone1"))
        if step.message == "Update"
        else step
        for step in endpoint.steps
    )
    changed = dataclasses.replace(spec, endpoints=(dataclasses.replace(endpoint, steps=steps),))
    plan = await reconcile(client, changed, apply=False, sas_key=sas_key)
    assert sorted(plan.changes) == [
        "~ step 'contoso-events: Create of account': statecode 1 -> 0, statuscode 2 -> 1",
        "~ step 'contoso-events: Update of contact': filteringattributes 'emailaddress1' -> "
        "'emailaddress1,telephone1'",
    ]
    await reconcile(client, changed, apply=True, sas_key=sas_key)
    rows = {step["name"]: step for step in emulator.rows("sdkmessageprocessingsteps")}
    assert rows["contoso-events: Create of account"]["statecode"] == 0
    assert (
        rows["contoso-events: Update of contact"]["filteringattributes"]
        == "emailaddress1,telephone1"
    )
    assert (await reconcile(client, changed, apply=False, sas_key=sas_key)).changes == []


async def test_unknown_steps_are_reported_not_deleted(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    await reconcile(client, spec, apply=True, sas_key=sas_key)
    fewer = dataclasses.replace(
        spec, endpoints=(dataclasses.replace(spec.endpoints[0], steps=spec.endpoints[0].steps[:1]),)
    )
    report = await reconcile(client, fewer, apply=True, sas_key=sas_key)
    assert (
        "! step 'contoso-events: Delete of contact' is registered but not in the file (left as is)"
        in (report.notes)
    )
    assert len(emulator.rows("sdkmessageprocessingsteps")) == 3


async def test_the_binary_format_is_refused_unless_asked(
    client: DataverseClient, spec: EnvironmentSpec
) -> None:
    binary = dataclasses.replace(
        spec, endpoints=(dataclasses.replace(spec.endpoints[0], message_format="binary"),)
    )
    with pytest.raises(SpecError, match="--allow-binary"):
        await reconcile(client, binary, apply=False, sas_key=sas_key)
    report = await reconcile(client, binary, apply=False, sas_key=sas_key, allow_binary=True)
    assert "binary" in report.changes[0]


def test_environment_files_are_validated(tmp_path) -> None:
    head = 'dataverse_url = "https://x.crm.dynamics.com"\n[[endpoints]]\nname = "e"\n'
    (tmp_path / "bad.toml").write_text(
        head + 'contract = "relay"\nnamespace = "n"\npath = "p"\nsas_key_env = "K"\n'
    )
    with pytest.raises(SpecError, match="contract must be one of queue, topic, eventhub"):
        load_environment("bad", tmp_path)
    (tmp_path / "keyless.toml").write_text(
        head + 'contract = "queue"\nnamespace = "n"\npath = "p"\n'
    )
    with pytest.raises(SpecError, match="sas_key_env or sas_key_vault"):
        load_environment("keyless", tmp_path)
    for name in ("dev", "test", "prod"):
        assert load_environment(name).endpoints[0].message_format == "json"


def vault(answers: dict[str, httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Key Vault's GET secret, answering by path; records what it was sent."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.get(request.url.path, httpx.Response(404, json={"error": {}}))

    return httpx.MockTransport(answer), seen


def test_a_vault_reference_names_the_secret_and_the_token_scope_of_its_cloud() -> None:
    assert secret_url("kv-contoso-events-dev/dataverse-send-key") == (
        "https://kv-contoso-events-dev.vault.azure.net/secrets/dataverse-send-key"
    )
    government = "https://kv-gov.vault.usgovcloudapi.net/secrets/dataverse-send-key/"
    assert secret_url(government) == government.rstrip("/")
    assert vault_scope(secret_url("kv/s")) == "https://vault.azure.net/.default"
    assert vault_scope(government) == "https://vault.usgovcloudapi.net/.default"


async def test_the_key_is_read_from_key_vault_with_a_token_for_the_vault() -> None:
    path = "/secrets/dataverse-send-key"
    transport, seen = vault({path: httpx.Response(200, json={"value": "the-key", "id": "x"})})
    url = secret_url("kv-contoso-events-dev/dataverse-send-key")
    credential = TokenIssuer()
    assert await read_vault_secret(url, credential, transport=transport) == "the-key"
    assert credential.scopes == [("https://vault.azure.net/.default",)]
    (request,) = seen
    assert request.url.host == "kv-contoso-events-dev.vault.azure.net"
    assert request.url.path == path
    assert request.url.params["api-version"] == "7.4"
    assert request.headers["authorization"] == "Bearer token-1"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(403, json={"error": {"code": "Forbidden"}}), "answered 403"),
        (httpx.Response(200, json={"id": "no value"}), "no secret value"),
        (httpx.Response(200, content=b"<html>proxy</html>"), "no secret value"),
        (httpx.Response(200, json={"value": ""}), "is empty"),
    ],
)
async def test_key_vault_refusals_say_what_went_wrong(answer: httpx.Response, message: str) -> None:
    transport, _ = vault({"/secrets/key": answer})
    url = "https://kv.vault.azure.net/secrets/key"
    with pytest.raises(SpecError, match=message):
        await read_vault_secret(url, TokenIssuer(), transport=transport)


async def test_the_send_keys_expiry_is_read_for_the_health_check() -> None:
    from datetime import UTC, datetime

    from shared.health_azure import AzureProbes

    expires = datetime(2027, 5, 1, tzinfo=UTC)
    answer = {"value": "k", "attributes": {"enabled": True, "exp": int(expires.timestamp())}}
    transport, _ = vault({"/secrets/dataverse-send-key": httpx.Response(200, json=answer)})
    endpoint = load_environment("dev").endpoints[0]
    probes = AzureProbes(TokenIssuer(), transport=transport)
    assert await probes.secret_expires(endpoint) == expires
    keyless = dataclasses.replace(endpoint, sas_key_vault=None, sas_key_env="KEY")
    assert await probes.secret_expires(keyless) is None  # nothing to read: no check
