"""DataverseClient over real HTTP: the emulator served by uvicorn on a loopback socket."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pytest

from shared.dataverse import BearerTokenAuth, DataverseClient, RetryPolicy
from shared.errors import DataverseError
from tests.dataverse_doubles import TokenIssuer
from tests.loopback import serve
from tools.emulator import DataverseEmulator


def client_for(url: str, budget: float = 10.0) -> DataverseClient:
    auth = BearerTokenAuth(TokenIssuer(), BearerTokenAuth.scope_for(url))
    return DataverseClient(url, auth=auth, retry=RetryPolicy(budget_seconds=budget))


async def test_round_trip_over_http() -> None:
    emulator = DataverseEmulator()
    with serve(emulator) as url:
        emulator.environment_url = url
        async with client_for(url) as client:
            account_id = await client.create("accounts", {"name": "Over the wire"})
            row = await client.retrieve("accounts", account_id, select=["name"])
            batch = client.batch()
            batch.changeset().create("contacts", {"lastname": "Batched"})
            results = await batch.send()
    assert isinstance(account_id, UUID)
    assert row["name"] == "Over the wire"
    assert results[0].status == 204
    assert emulator.requests[0].headers["authorization"] == "Bearer token-1"


async def test_retry_after_is_honoured_in_real_time() -> None:
    emulator = DataverseEmulator()
    emulator.inject(429, retry_after=0.3)
    with serve(emulator) as url:
        async with client_for(url) as client:
            started = time.monotonic()
            await client.create("accounts", {"name": "patient"})
            waited = time.monotonic() - started
    assert waited >= 0.3
    assert len(emulator.rows("accounts")) == 1


async def test_budget_ends_a_slow_post_without_replaying_it() -> None:
    emulator = DataverseEmulator()
    emulator.inject(None, method="POST", delay=1.5)  # Dataverse is slow to answer this create
    with serve(emulator) as url:
        async with client_for(url, budget=0.5) as client:
            started = time.monotonic()
            with pytest.raises(DataverseError) as caught:
                await client.create("accounts", {"name": "slow"})
            elapsed = time.monotonic() - started
        await asyncio.sleep(1.5)  # let the server finish what it received
    assert caught.value.retryable is True
    assert caught.value.code == "NoResponse"
    assert elapsed < 1.0  # the budget, not the server, ended the call
    # Dataverse applied the create once; the client never sent it a second time.
    assert [request.method for request in emulator.requests].count("POST") == 1
    assert [row["name"] for row in emulator.rows("accounts")] == ["slow"]
