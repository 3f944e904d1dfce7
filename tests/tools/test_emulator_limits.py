"""The emulator's service protection limits: each refused at the threshold Learn documents
("Service protection API limits"), with its own error code and a Retry-After, per user."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.tools.conftest import web_api
from tools.emulator import DataverseEmulator
from tools.emulator.limits import CONCURRENCY, EXECUTION_TIME, REQUESTS, ServiceProtection


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_defaults_are_learns_numbers() -> None:
    limits = ServiceProtection()
    assert (limits.requests, limits.execution_ms, limits.concurrent, limits.window_seconds) == (
        6000,
        1_200_000.0,
        52,
        300.0,
    )


async def many(client: httpx.AsyncClient, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        statuses.append((await client.get("accounts?$top=1")).status_code)
    return statuses


async def test_the_6001st_request_in_300_s_is_refused_until_the_window_moves(
    clock: Clock,
) -> None:
    limits = ServiceProtection(cost_ms=0.0, clock=clock)
    emulator = DataverseEmulator(limits=limits)
    emulator.add_identity("app", "app user")
    emulator.add_identity("other", "another user")
    async with web_api(emulator, "app") as client, web_api(emulator, "other") as other:
        assert set(await many(client, 6000)) == {200}
        refused = await client.get("accounts?$top=1")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == REQUESTS
        assert refused.json()["error"]["message"] == (
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
        )
        assert float(refused.headers["Retry-After"]) == 300
        assert (await other.get("accounts?$top=1")).status_code == 200  # per user
        clock.now += 300.5
        assert (await client.get("accounts?$top=1")).status_code == 200


async def test_execution_time_past_1_200_000_ms_is_refused(clock: Clock) -> None:
    limits = ServiceProtection(cost_ms=1000.0, clock=clock)
    emulator = DataverseEmulator(limits=limits)
    async with web_api(emulator, "app") as client:
        assert set(await many(client, 1200)) == {200}
        refused = await client.get("accounts?$top=1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == EXECUTION_TIME
    assert "exceeded limit of 1,200,000 milliseconds" in refused.json()["error"]["message"]
    assert float(refused.headers["Retry-After"]) >= 1


async def test_the_53rd_concurrent_request_is_refused_at_once() -> None:
    emulator = DataverseEmulator(limits=ServiceProtection(), latency=0.2)
    async with web_api(emulator, "app") as client:
        responses = await asyncio.gather(*(client.get("accounts?$top=1") for _ in range(60)))
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 8
    assert {r.json()["error"]["code"] for r in refused} == {CONCURRENCY}
    assert refused[0].json()["error"]["message"] == (
        "Number of concurrent requests exceeded the limit of 52."
    )


async def test_a_batch_counts_each_operation(clock: Clock) -> None:
    limits = ServiceProtection(requests=10, cost_ms=0.0, clock=clock)
    emulator = DataverseEmulator(limits=limits)
    from tests.dataverse_doubles import emulated_client

    async with emulated_client(emulator) as client:
        batch = client.batch()
        for n in range(10):
            batch.create("accounts", {"name": f"a{n}"})
        await batch.send()
    assert len(emulator.rows("accounts")) == 10
    async with web_api(emulator, "token-1") as raw:
        assert (await raw.get("accounts?$top=1")).status_code == 429


async def test_several_web_servers_each_count_their_own(clock: Clock) -> None:
    limits = ServiceProtection(requests=5, cost_ms=0.0, servers=2, clock=clock)
    emulator = DataverseEmulator(limits=limits)
    async with web_api(emulator, "app") as client:
        statuses = await many(client, 11)
    assert statuses.count(200) == 10
    assert statuses[-1] == 429
