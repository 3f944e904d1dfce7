"""One watchdog enforces handler deadlines (shared/deadlines.py)."""

from __future__ import annotations

import asyncio

import pytest

from shared.deadlines import Deadlines


async def run(deadlines: Deadlines, budget: float, seconds: float) -> str:
    task = deadlines.start(budget)
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        return "cancelled"
    finally:
        deadlines.stop(task)


async def test_a_call_past_its_deadline_is_cancelled_and_the_task_goes_on() -> None:
    assert await run(Deadlines(), 0.1, 5) == "cancelled"
    # The cancellation was withdrawn: this task runs on normally.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)


async def test_a_call_within_its_deadline_is_left_alone() -> None:
    deadlines = Deadlines()
    assert await run(deadlines, 1.0, 0.01) == "done"
    assert await run(deadlines, 1.0, 0) == "done"


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_deadline() -> None:
    task = asyncio.create_task(run(Deadlines(), 60, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_concurrent_calls_each_get_their_own_deadline() -> None:
    deadlines = Deadlines()
    results = await asyncio.gather(
        run(deadlines, 0.1, 0.01), run(deadlines, 0.1, 3), run(deadlines, 0.1, 0.02)
    )
    assert list(results) == ["done", "cancelled", "done"]


def test_a_watchdog_left_pending_by_a_closed_loop_is_replaced_in_the_next() -> None:
    # A client outlives the loop it first ran on (a test's, a worker's restarted one): the
    # first loop closed with its watchdog asleep, and the next loop's deadlines never fired.
    deadlines = Deadlines()
    first = asyncio.new_event_loop()
    first.run_until_complete(run(deadlines, 60, 0))
    first.close()
    second = asyncio.new_event_loop()
    try:
        assert second.run_until_complete(run(deadlines, 0.1, 5)) == "cancelled"
    finally:
        second.close()
