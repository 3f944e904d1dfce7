"""Concurrency that adapts: instances sharing one application user converge to their share of
its 52 concurrent requests without a coordinator (additive increase, multiplicative decrease)."""

from __future__ import annotations

import asyncio

import httpx

from shared.dataverse import DataverseClient
from shared.dataverse.pacing import AdaptiveLimit
from tools.emulator import AnyToken, DataverseEmulator
from tools.emulator.limits import CONCURRENCY, ServiceProtection


def test_a_429_halves_the_limit_and_successes_climb_back_one_at_a_time() -> None:
    limit = AdaptiveLimit(16)
    limit.throttled_by(CONCURRENCY)
    assert limit.limit == 8
    for _ in range(8):
        limit.succeeded()
    assert limit.limit == 9  # one more after a full limit's worth of successes
    for _ in range(10):
        limit.throttled_by("0x80072322")
    assert limit.limit == 1  # never below one
    for _ in range(10_000):
        limit.succeeded()
    assert limit.limit == 16  # never above the ceiling
    assert limit.throttled == 11


def test_a_fixed_limit_does_not_move() -> None:
    limit = AdaptiveLimit(16, adaptive=False)
    limit.throttled_by(CONCURRENCY)
    assert limit.limit == 16
    assert limit.throttled == 1


async def test_the_limit_caps_what_is_in_flight() -> None:
    limit = AdaptiveLimit(4)
    limit.throttled_by(CONCURRENCY)  # now 2
    most = 0

    async def work() -> None:
        nonlocal most
        async with limit:
            most = max(most, limit.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(work() for _ in range(10)))
    assert most == 2


async def fleet(adaptive: bool, instances: int = 8, writes: int = 120) -> tuple[int, int, int]:
    """`instances` clients of 16 sharing one user's 52 concurrent requests: 429s, the clients
    whose limit went down, rows written."""
    emulator = DataverseEmulator(limits=ServiceProtection(cost_ms=0.0), latency=0.02)
    clients = [
        DataverseClient(
            "https://contoso.crm.dynamics.com",
            auth=AnyToken("app"),
            transport=httpx.ASGITransport(app=emulator),
            max_concurrency=16,
            adaptive_concurrency=adaptive,
        )
        for _ in range(instances)
    ]

    async def drain(client: DataverseClient) -> None:
        await asyncio.gather(*(client.create("accounts", {"name": f"n{i}"}) for i in range(writes)))

    await asyncio.gather(*(drain(client) for client in clients))
    throttled = sum(client.concurrency.throttled for client in clients)
    lowered = sum(1 for client in clients if client.concurrency.decreases)
    for client in clients:
        await client.aclose()
    return throttled, lowered, len(emulator.rows("accounts"))


async def test_a_fleet_over_the_shared_limit_loses_nothing_and_the_refused_back_off() -> None:
    # 8 x 16 = 128 in flight against 52: some are refused with the concurrency error; the
    # clients that were refused halve their limit, and every write still lands.
    throttled, lowered, rows = await fleet(adaptive=True)
    assert rows == 8 * 120
    assert throttled > 0
    assert lowered > 0
    fixed_throttled, fixed_lowered, fixed_rows = await fleet(adaptive=False)
    assert fixed_rows == 8 * 120
    assert fixed_throttled > 0
    assert fixed_lowered == 0


async def test_a_cancelled_waiter_leaves_no_slot_behind_and_waiters_go_in_order() -> None:
    limit = AdaptiveLimit(1)
    order: list[int] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with limit:
            await release.wait()

    async def waiter(number: int) -> None:
        async with limit:
            order.append(number)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter(0))
    others = [asyncio.create_task(waiter(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(first, *others)
    assert order == [1, 2, 3]
    assert limit.in_flight == 0
    assert not limit._waiters


async def test_many_waiters_all_get_through_never_more_than_the_limit_at_once() -> None:
    limit = AdaptiveLimit(2)
    ran = most = 0

    async def work() -> None:
        nonlocal ran, most
        async with limit:
            ran += 1
            most = max(most, limit.in_flight)
            await asyncio.sleep(0)

    await asyncio.gather(*(work() for _ in range(200)))
    assert (ran, most, limit.in_flight) == (200, 2, 0)
