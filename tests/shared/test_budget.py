"""The request budget shared by a fleet (shared/dataverse/budget.py): never more than the
window allows, across instances, skewed clocks and storage failures."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest

from shared.dataverse import DataverseClient, RetryPolicy
from shared.dataverse.budget import (
    FALLBACK_SECONDS,
    InMemoryRing,
    SharedBudget,
    Slot,
    TableRing,
)
from shared.errors import Throttled

WINDOW = 300.0
REQUESTS = 600


class Clock:
    """Virtual time: sleeping moves it on, so a fleet's minutes run in milliseconds."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def drain(budget: SharedBudget, clock: Clock, true_time: Clock, sends: list[float]) -> None:
    """Send as fast as the budget allows until virtual time has run three windows."""
    end = true_time() + 3 * WINDOW
    while true_time() < end:
        assert await budget.acquire(float("inf"), clock) is None
        sends.append(true_time())
        await true_time.sleep(0.05)  # the request itself


@pytest.mark.parametrize("skew", [0.0, 10.0, -10.0], ids=["same-clock", "ahead", "behind"])
async def test_a_fleet_never_sends_more_than_the_window_allows_and_uses_most_of_it(
    skew: float,
) -> None:
    true_time = Clock()

    class Skewed:
        def __call__(self) -> float:
            return true_time() + skew

    ring = InMemoryRing()
    budgets = [
        SharedBudget(
            ring,
            requests=REQUESTS,
            window_seconds=WINDOW,
            clock=true_time if n % 2 == 0 else Skewed(),
            sleep=true_time.sleep,
        )
        for n in range(4)
    ]
    sends: list[float] = []
    await asyncio.gather(*(drain(budget, true_time, true_time, sends) for budget in budgets))

    # Dataverse's own count: any 300 s of true time.
    assert most_in_any_window(sends, WINDOW) <= REQUESTS
    # Three windows' worth of time, at most four windows' worth of budget: most of it spent.
    assert len(sends) >= 0.9 * 3 * REQUESTS
    assert sum(budget.waits for budget in budgets) > 0
    if skew == 0:  # and no slot spends more than twice its share: no burst over 52 in flight
        per_slot = Counter(int(at // budgets[0].slot_seconds) for at in sends)
        assert max(per_slot.values()) <= budgets[0].slot_cap == 2 * REQUESTS // 20


async def test_a_full_window_beyond_the_call_budget_hands_the_message_back_unsent() -> None:
    clock = Clock()
    budget = SharedBudget(
        InMemoryRing(), requests=2, window_seconds=WINDOW, clock=clock, sleep=clock.sleep
    )
    sent = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.Response(204, headers={"OData-EntityId": f"accounts({uuid.uuid4()})"})

    async with DataverseClient(
        "https://contoso.crm.dynamics.com",
        transport=httpx.MockTransport(answer),
        budget=budget,
        retry=RetryPolicy(budget_seconds=5, max_pause_seconds=10),
        clock=clock,
        sleep=clock.sleep,
    ) as client:
        await client.create("accounts", {"name": "one"})
        await client.create("accounts", {"name": "two"})
        with pytest.raises(Throttled) as raised:
            await client.create("accounts", {"name": "three"})
    assert raised.value.retryable
    assert raised.value.code == "BudgetExhausted"
    assert sent == 2


async def test_storage_failing_steps_the_budget_aside_for_a_while_and_it_comes_back() -> None:
    clock = Clock()
    ring = InMemoryRing()
    budget = SharedBudget(ring, requests=1, window_seconds=WINDOW, clock=clock, sleep=clock.sleep)
    ring.fail = OSError("storage is down")
    for _ in range(5):  # no wait, no error: Dataverse's own limits still apply meanwhile
        assert await budget.acquire(clock() + 1, clock) is None
    many = [budget.acquire(clock() + 1, clock) for _ in range(20)]
    assert await asyncio.gather(*many) == [None] * 20
    assert budget.unavailable == 1  # one warning for the outage, not one per waiting call
    ring.fail = None
    clock.now += FALLBACK_SECONDS
    assert await budget.acquire(clock() + 1, clock) is None  # the one request of the window
    assert await budget.acquire(clock() + 1, clock) is not None  # the window is full again
    assert budget.granted == 1


async def test_tokens_left_when_their_slot_ends_are_given_back_not_carried_over() -> None:
    class Yielding(InMemoryRing):
        async def read(self) -> list[Slot]:
            await asyncio.sleep(0)  # as storage would: other callers queue meanwhile
            return await super().read()

    clock = Clock()
    ring = Yielding()
    budget = SharedBudget(ring, requests=100, window_seconds=WINDOW, clock=clock, sleep=clock.sleep)
    calls = [asyncio.create_task(budget.acquire(clock() + 1, clock)) for _ in range(3)]
    await calls[0]  # it took three (three callers waited), and spent one
    for call in calls[1:]:
        call.cancel()  # the others went away, at most one of them having spent a token
    ended = await asyncio.gather(*calls[1:], return_exceptions=True)
    sent_first = 1 + sum(result is None for result in ended)
    assert sent_first < 3
    first = budget._slot(clock())
    clock.now += budget.slot_seconds  # the slot ends
    assert await budget.acquire(clock() + 1, clock) is None
    counts = {row.slot: row.count for row in ring.rows.values()}
    assert counts == {first: sent_first, first + 1: 1}  # the old slot counts only what was sent
    assert budget.refunded == 3 - sent_first


async def test_instances_share_one_count_in_table_storage(request: pytest.FixtureRequest) -> None:
    from azure.data.tables.aio import TableClient

    connection = request.getfixturevalue("azurite")
    name = "budget" + uuid.uuid4().hex[:8]
    tables = [TableClient.from_connection_string(connection, table_name=name) for _ in range(3)]
    key = "contoso.crm.dynamics.com"
    budgets = [
        # A 10 s window, as the fleet benchmark's: slot numbers past Edm.Int32.
        SharedBudget(TableRing(table, key), requests=40, window_seconds=10, claim=4, burst=20)
        for table in tables
    ]

    async def take(budget: SharedBudget) -> int:
        taken = 0
        # Never wait: count what fits (bounded: a budget that failed open would never stop).
        while taken < 100 and await budget.acquire(0.0, lambda: -1.0) is None:
            taken += 1
        return taken

    try:
        taken = await asyncio.gather(*(take(budget) for budget in budgets))
        # ETag conflicts read again: no grant counted twice. A grant its slot ended on is given
        # back, unless another instance wrote that row first (then it stays counted).
        assert 38 <= sum(taken) <= 40
        assert sum(budget.unavailable for budget in budgets) == 0
    finally:
        await tables[0].delete_table()
        for table in tables:
            await table.close()
