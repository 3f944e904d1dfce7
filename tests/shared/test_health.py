"""The health monitor reports each sending-side failure as its own check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.dataverse import DataverseClient
from shared.health import CheckResult, run_checks
from shared.registration import EnvironmentSpec, load_environment
from tests.dataverse_doubles import FakeTime, TokenIssuer, emulated_client
from tests.registration import environment, sas_key
from tools.emulator import DataverseEmulator
from tools.endpoints import reconcile

SINCE = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def spec() -> EnvironmentSpec:
    return load_environment("dev")


@pytest.fixture
def emulator() -> DataverseEmulator:
    return environment()


@pytest.fixture
async def client(
    emulator: DataverseEmulator, spec: EnvironmentSpec
) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator, issuer=TokenIssuer(FakeTime())) as client:
        await reconcile(client, spec, apply=True, sas_key=sas_key)
        yield client


def failures(results: list[CheckResult]) -> list[tuple[str, str]]:
    return [(result.check, result.target) for result in results if not result.ok]


async def test_a_healthy_environment_passes_every_check(
    client: DataverseClient, spec: EnvironmentSpec
) -> None:
    results = await run_checks(client, spec, since=SINCE)
    assert failures(results) == []
    assert [result.check for result in results][:4] == [
        "authentication",
        "endpoint-exists",
        "sas-key-set",
        "endpoint-check",
    ]
    assert [result.check for result in results].count("step-enabled") == 3
    assert [result.check for result in results].count("failed-jobs") == 3


async def test_a_disabled_step(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    step = emulator.rows("sdkmessageprocessingsteps")[1]
    await client.update(
        "sdkmessageprocessingsteps", step["sdkmessageprocessingstepid"], {"statecode": 1}
    )
    assert failures(await run_checks(client, spec, since=SINCE)) == [("step-enabled", step["name"])]


async def test_a_missing_sas_key(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    (endpoint,) = emulator.rows("serviceendpoints")
    await client.update(
        "serviceendpoints", endpoint["serviceendpointid"], {"saskey": ""}
    )  # as after an import
    assert failures(await run_checks(client, spec, since=SINCE)) == [
        ("sas-key-set", "contoso-events"),
        ("endpoint-check", "contoso-events"),
    ]


async def test_a_rotated_key_fails_the_endpoint_check(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    (endpoint,) = emulator.rows("serviceendpoints")
    emulator.unreachable_endpoints.add(endpoint["serviceendpointid"])
    results = await run_checks(client, spec, since=SINCE)
    assert failures(results) == [("endpoint-check", "contoso-events")]
    assert "401" in next(result.detail for result in results if not result.ok)


async def test_a_failed_system_job(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    step = emulator.rows("sdkmessageprocessingsteps")[0]
    recent = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (SINCE - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for completed in (recent, old):
        await client.create(
            "asyncoperations",
            {
                "statuscode": 31,
                "completedon": completed,
                "friendlymessage": "The remote name could not be resolved",
                "_owningextensionid_value": step["sdkmessageprocessingstepid"],
            },
        )
    results = await run_checks(client, spec, since=SINCE)
    assert failures(results) == [("failed-jobs", step["name"])]
    detail = next(result.detail for result in results if not result.ok)
    assert detail == "1 failed posts; latest: The remote name could not be resolved"


async def test_an_authentication_failure(
    client: DataverseClient, emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    for token in ("token-1", "token-2", "token-3"):
        emulator.revoke(token)
    results = await run_checks(client, spec, since=SINCE)
    assert failures(results) == [("authentication", "https://contoso-dev.crm.dynamics.com")]
    assert len(results) == 1
    assert "cannot authenticate" in results[0].detail


async def test_dead_letter_counts_with_management_rights(
    client: DataverseClient, spec: EnvironmentSpec
) -> None:
    async def three(endpoint: object) -> int:
        return 3

    results = await run_checks(client, spec, since=SINCE, dead_letters=three)
    assert failures(results) == [("dead-letters", "dataverse-events")]

    async def no_rights(endpoint: object) -> int:
        raise PermissionError("Unauthorized: Manage claim required")

    results = await run_checks(client, spec, since=SINCE, dead_letters=no_rights)
    assert "could not count" in next(r.detail for r in results if r.check == "dead-letters")


async def test_each_check_is_logged_as_one_structured_line(
    client: DataverseClient, spec: EnvironmentSpec, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="dataverse.health"):
        results = await run_checks(client, spec, since=SINCE)
    records = [record for record in caplog.records if record.name == "dataverse.health"]
    assert len(records) == len(results)
    assert {record.health_check for record in records} >= {"authentication", "failed-jobs"}  # type: ignore[attr-defined]


class NoToken:
    """A credential that cannot get a token (no managed identity, an expired login)."""

    async def get_token(self, *scopes: str, **_: object) -> object:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError("ManagedIdentityCredential: no identity endpoint")


async def test_no_token_at_all_is_the_authentication_check_failing_not_a_traceback(
    emulator: DataverseEmulator, spec: EnvironmentSpec
) -> None:
    async with emulated_client(emulator, issuer=NoToken()) as client:  # type: ignore[arg-type]
        results = await run_checks(client, spec, since=SINCE)
    assert failures(results) == [("authentication", "https://contoso-dev.crm.dynamics.com")]
    assert "ClientAuthenticationError" in results[0].detail
    assert "managed identity" in results[0].detail
