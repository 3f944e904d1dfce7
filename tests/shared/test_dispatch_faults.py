"""The dispatcher under the store's and the clock's faults (issue findings 2 and 6): a store
that fails around a handler, a handler that outlives its claim, instances whose clocks differ."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest
from azure.data.tables.aio import TableClient

from shared.dispatch import Completed, Dispatcher, Retry
from shared.idempotency import Claim, ClaimState, InMemoryIdempotencyStore, LostClaim
from shared.idempotency_table import TableIdempotencyStore
from shared.routing import Router
from shared.settings import Settings
from tests.events import ORGANIZATION_ID, event

SETTINGS = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))


async def no_wait(_: float) -> None:
    return None


class FlakyStore(InMemoryIdempotencyStore):
    """Fails `complete` the first `failures` times, as a Table endpoint with a passing 503."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.completions = 0

    async def complete(self, claim: Claim) -> None:
        self.completions += 1
        if self.completions <= self.failures:
            raise ConnectionResetError("table endpoint reset the connection")
        await super().complete(claim)


def dispatcher_with(
    store: InMemoryIdempotencyStore, handler: Any, *, ordered: bool = False
) -> Dispatcher:
    router = Router()
    router.on(entity="account", message="Create", ordered=ordered)(handler)
    return Dispatcher(router, lambda: None, SETTINGS, idempotency=store, sleep=no_wait)  # type: ignore[arg-type, return-value]


async def test_a_passing_store_error_on_completion_is_retried_in_place() -> None:
    runs: list[int] = []

    async def handler(context: Any, dataverse: Any) -> None:
        runs.append(1)

    store = FlakyStore(failures=2)
    outcome = await dispatcher_with(store, handler).process(event())
    assert isinstance(outcome, Completed)
    assert (store.completions, runs) == (3, [1])


async def test_a_completion_the_store_keeps_refusing_becomes_a_retry_not_an_exception() -> None:
    """Finding: a transient Table error in complete() escaped after the handler succeeded and
    left the claim leased, and the redeliveries dead-lettered an event already applied."""

    async def handler(context: Any, dataverse: Any) -> None:
        return None

    store = FlakyStore(failures=10)
    outcome = await dispatcher_with(store, handler).process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "StoreUnavailable"
    assert "applied the event" in outcome.detail


async def test_a_store_that_cannot_be_reached_for_the_claim_is_a_retry() -> None:
    class Down(InMemoryIdempotencyStore):
        async def claim(self, key: str) -> Claim:
            raise OSError("no route to the table endpoint")

    async def handler(context: Any, dataverse: Any) -> None:
        raise AssertionError("must not run without a claim")

    outcome = await dispatcher_with(Down(), handler).process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "StoreUnavailable"


async def test_a_handler_cannot_outlive_its_claim() -> None:
    """Finding: a handler that outlived its lease let another delivery take the row's claim,
    and an ordered row went back in time with both runs reported Completed."""
    cancelled = asyncio.Event()

    async def slow(context: Any, dataverse: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    store = InMemoryIdempotencyStore(lease_seconds=0.25)
    dispatcher = dispatcher_with(store, slow, ordered=True)
    assert dispatcher.handler_budget_seconds == pytest.approx(0.2)
    outcome = await dispatcher.process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "HandlerTimeout"
    assert cancelled.is_set()


async def test_an_ordered_run_whose_claim_was_lost_is_not_reported_completed() -> None:
    class Lost(InMemoryIdempotencyStore):
        async def complete(self, claim: Claim) -> None:
            raise LostClaim(claim.key)

    async def handler(context: Any, dataverse: Any) -> None:
        return None

    outcome = await dispatcher_with(Lost(), handler, ordered=True).process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "LeaseLost"
    unordered = await dispatcher_with(Lost(), handler).process(event())
    assert isinstance(unordered, Completed)  # absorbed by idempotent writes, as documented


async def test_an_instance_whose_clock_runs_ahead_does_not_cut_a_live_lease(azurite: str) -> None:
    """Finding: with one instance 120 s ahead, it took over a 300 s lease after 181 s."""
    table = f"skew{uuid4().hex[:12]}"
    now = 1_700_000_000.0
    holder_clock = [now]
    ahead_clock = [now + 120]
    holder = TableIdempotencyStore(
        TableClient.from_connection_string(azurite, table_name=table),
        clock=lambda: holder_clock[0],
    )
    ahead = TableIdempotencyStore(
        TableClient.from_connection_string(azurite, table_name=table),
        clock=lambda: ahead_clock[0],
    )
    try:
        assert (await holder.claim("op|step|h")).state is ClaimState.ACQUIRED
        ahead_clock[0] += 181  # 181 s later, on a clock 120 s ahead: 301 s by its reckoning
        assert (await ahead.claim("op|step|h")).state is ClaimState.IN_PROGRESS
        ordered = await holder.claim_in_order("account|1", "h", _position())
        assert ordered.state is ClaimState.ACQUIRED
        assert (await ahead.claim_in_order("account|1", "h", _position())).state is (
            ClaimState.IN_PROGRESS
        )
        ahead_clock[0] += 300  # long after the lease and the margin: a crash, taken over
        assert (await ahead.claim("op|step|h")).state is ClaimState.ACQUIRED
    finally:
        await holder._table.delete_table()
        await holder.close()
        await ahead.close()


def _position() -> Any:
    from datetime import UTC, datetime

    from shared.idempotency import Position

    return Position(datetime(2025, 1, 1, tzinfo=UTC), 1, "op")
