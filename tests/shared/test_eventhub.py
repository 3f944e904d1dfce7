"""Event Hubs never loses an event: findings of the operator's fault drill, each reproduced
against process_batch as the trigger calls it (shared/eventhub.py)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from shared.dispatch import Completed, Outcome, Retry
from shared.eventhub import (
    PARK_AFTER_RETRIES,
    BatchNeedsRetry,
    is_final_attempt,
    process_batch,
    retry_waits,
)
from shared.events import DataverseEvent
from shared.idempotency import DEFAULT_LEASE_SECONDS as LEASE_SECONDS
from shared.poison import InMemoryPoisonStore
from tests.events import event


class StoreFailingDispatcher:
    """A dispatcher whose idempotency store raises for some events (a Table outage)."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing

    async def process(self, item: DataverseEvent) -> Outcome:
        if item.message_id in self.failing:
            raise ConnectionError("table endpoint unreachable")
        return Completed(("handler",))


class FlakyPoisonStore(InMemoryPoisonStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def park(self, *args: Any, **kwargs: Any) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise PermissionError("AuthorizationPermissionMismatch")
        return await super().park(*args, **kwargs)


async def no_wait(_: float) -> None:
    return None


def batch(count: int) -> list[DataverseEvent]:
    return [
        replace(
            event(
                message_id=f"m{index}",
                changes={"PrimaryEntityId": f"{index:08x}-0000-4000-8000-000000000000"},
            ),
            position=f"{100 + index}@0",
        )
        for index in range(count)
    ]


async def test_a_store_error_inside_one_event_does_not_escape_the_batch() -> None:
    events = batch(3)
    dispatcher: Any = StoreFailingDispatcher({"m1"})
    with pytest.raises(BatchNeedsRetry, match="1 of 3"):
        await process_batch(
            dispatcher, events, InMemoryPoisonStore(), partition="0", final_attempt=False
        )
    poison = InMemoryPoisonStore()
    report = await process_batch(dispatcher, events, poison, partition="0", final_attempt=True)
    assert [type(outcome) for outcome in report.outcomes] == [Completed, Retry, Completed]
    assert len(report.parked) == 1
    parked = await poison.get(report.parked[0])
    assert parked.reason == "Unexpected"  # the last reason, kept
    assert "ConnectionError" in parked.description


async def test_parking_is_retried() -> None:
    poison = FlakyPoisonStore(failures=2)
    dispatcher: Any = StoreFailingDispatcher({"m0"})
    report = await process_batch(
        dispatcher, batch(1), poison, partition="0", final_attempt=True, sleep=no_wait
    )
    assert poison.attempts == 3
    assert len(report.parked) == 1


async def test_an_event_neither_applied_nor_parked_fails_the_batch_and_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding: a missing role on the poison container made park() raise out of gather and
    the host checkpointed past the batch. Now the invocation fails, and the unbounded retry
    policy keeps the checkpoint before the event until it can be parked."""
    poison = FlakyPoisonStore(failures=10**6)
    dispatcher: Any = StoreFailingDispatcher({"m1"})
    with (
        caplog.at_level(logging.CRITICAL, logger="dataverse.eventhub"),
        pytest.raises(BatchNeedsRetry, match="could not be parked"),
    ):
        await process_batch(
            dispatcher, batch(2), poison, partition="3", final_attempt=True, sleep=no_wait
        )
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "partition 3, sequence 101@0" in record.getMessage()


def test_events_are_parked_only_after_the_retries_have_waited_out_a_lease() -> None:
    """Finding: the policy's 155 s of waits ended inside the 300 s lease, so an event held by
    a crashed instance was parked as InProgress, never applied."""
    assert sum(retry_waits(PARK_AFTER_RETRIES)) > LEASE_SECONDS
    assert not is_final_attempt(_retry(PARK_AFTER_RETRIES - 1, -1))
    assert is_final_attempt(_retry(PARK_AFTER_RETRIES, -1))
    # A host policy that ends sooner: its last retry parks, since the host checkpoints after.
    assert is_final_attempt(_retry(2, 2))
    assert is_final_attempt(_retry(0, 0))


def _retry(count: int, maximum: int) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(retry_count=count, max_retry_count=maximum)


def test_the_trigger_uses_the_policy_the_waits_are_computed_from() -> None:
    import ast
    from pathlib import Path

    from shared import eventhub

    source = (Path(__file__).resolve().parents[2] / "function_app.py").read_text()
    [call] = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "retry"
    ]
    policy = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    assert policy["max_retry_count"] == "-1"
    assert policy["minimum_interval"] == f"00:00:{eventhub.RETRY_MINIMUM_SECONDS:02d}"
    assert policy["maximum_interval"] == f"00:{eventhub.RETRY_MAXIMUM_SECONDS // 60:02d}:00"
