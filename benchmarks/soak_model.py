"""The world the soak (benchmarks.soak) runs its app in: a Service Bus broker as it behaves,
clocks that run faster than real time, crashing instances, and a ledger of what happened,
kept outside the app under test."""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.data.tables.aio import TableClient

from shared.events import DataverseEvent
from shared.idempotency import Claim
from shared.idempotency_table import TableIdempotencyStore
from shared.poison import InMemoryPoisonStore

ORGANIZATION = "0f000000-0000-4000-8000-0000000000aa"
CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"
LOCK_SECONDS = 300.0  # infra/main.bicep: lockDuration PT5M
MAX_DELIVERY_COUNT = 10  # infra/main.bicep: maxDeliveryCount
LEASE_SECONDS = 300.0


class ScaledTime:
    """Clocks and a sleep running 1/scale times as fast as real time."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._wall = time.time()
        self._mono = time.monotonic()

    def wall(self) -> float:
        return self._wall + (time.time() - self._wall) / self.scale

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono) / self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.scale)


@dataclass
class Ledger:
    """What actually happened, kept outside the app under test."""

    runs: int = 0
    crashes: int = 0
    instance_crashes: int = 0
    slow_runs: int = 0
    complete_errors: int = 0
    recorded: set[tuple[str, str]] = field(default_factory=set)  # (handler, event)
    doubled: int = 0
    latest_recorded: dict[str, int] = field(default_factory=dict)  # row -> sequence
    stale_applied: int = 0
    # What each task's handler finished, until the store records it: (handler, event, row, seq)
    finished: dict[asyncio.Task[Any], tuple[str, str, str, int]] = field(default_factory=dict)

    def start(self, handler: str, event: str) -> None:
        self.runs += 1
        if (handler, event) in self.recorded:
            self.doubled += 1

    def finish(self, handler: str, event: str, row: str = "", sequence: int = 0) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.finished[task] = (handler, event, row, sequence)

    def record(self) -> None:
        """The store recorded the completion of what the current task's handler finished."""
        task = asyncio.current_task()
        entry = self.finished.pop(task, None) if task is not None else None
        if entry is None:
            return
        handler, event, row, sequence = entry
        self.recorded.add((handler, event))
        if row:
            self.latest_recorded[row] = max(self.latest_recorded.get(row, 0), sequence)


@dataclass
class Instance:
    """One app instance: what it runs now, so a crash can cut all of it off."""

    number: int
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)

    def crash(self) -> None:
        for task in self.in_flight:
            task.cancel()


CURRENT: contextvars.ContextVar[Instance] = contextvars.ContextVar("soak_instance")


class LedgerStore(TableIdempotencyStore):
    """The real table store, telling the ledger what it recorded, and failing some completion
    writes when asked (before anything is written, as a refused request would)."""

    def __init__(
        self, table: TableClient, ledger: Ledger, rng: random.Random, error_rate: float, **kw: Any
    ) -> None:
        super().__init__(table, **kw)
        self._ledger = ledger
        self._rng = rng
        self._error_rate = error_rate

    async def complete(self, claim: Claim) -> None:
        if self._rng.random() < self._error_rate:
            self._ledger.complete_errors += 1
            raise ServiceRequestError("injected: the table did not answer")
        await super().complete(claim)
        self._ledger.record()


@dataclass
class SoakMessage:
    """The parts of a `ServiceBusReceivedMessage` that `DataverseEvent.from_service_bus` reads."""

    body: bytes
    message_id: str
    delivery_count: int
    sequence_number: int
    content_type: str = "application/json"
    application_properties: dict[str, str] = field(
        default_factory=lambda: {CLAIMS + "Organization": ORGANIZATION}
    )


@dataclass(order=True)
class Delivery:
    visible_at: float
    sequence: int
    index: int = field(compare=False)
    count: int = field(compare=False, default=0)  # deliveries so far
    locked_until: float = field(compare=False, default=0.0)


class Broker:
    """A Service Bus queue as the broker behaves: a received message stays locked; settled, it
    is gone; unsettled (a Retry, a crash, a failed settlement) it becomes visible again when its
    lock expires, with its delivery count one higher. Past MaxDeliveryCount the broker would
    dead-letter it itself (counted, and premature, like any other here)."""

    def __init__(self, clock: ScaledTime) -> None:
        self._clock = clock
        self._heap: list[Delivery] = []
        self._sequence = itertools.count(1)
        self.outstanding = 0
        self.broker_dead_letters = 0
        self.done = asyncio.Event()

    def send(self, index: int) -> None:
        heapq.heappush(self._heap, Delivery(0.0, next(self._sequence), index))
        self.outstanding += 1

    async def receive(self) -> Delivery | None:
        while not self.done.is_set():
            now = self._clock.monotonic()
            if self._heap and self._heap[0].visible_at <= now:
                delivery = heapq.heappop(self._heap)
                if delivery.count >= MAX_DELIVERY_COUNT:
                    self.broker_dead_letters += 1
                    self.settled()
                    continue
                delivery.count += 1
                delivery.locked_until = now + LOCK_SECONDS
                return delivery
            await asyncio.sleep(0.005)
        return None

    def unsettled(self, delivery: Delivery) -> None:
        delivery.visible_at = delivery.locked_until
        heapq.heappush(self._heap, delivery)

    def settled(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.done.set()


class Settlements:
    """`ServiceBusMessageActions` for one delivery."""

    def __init__(self) -> None:
        self.action: str | None = None
        self.reason: str | None = None
        self.description: str | None = None

    def complete(self, message: Any) -> None:
        self.action = "complete"

    def abandon(self, message: Any) -> None:
        self.action = "abandon"

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        self.action, self.reason = "deadletter", deadletter_reason
        self.description = deadletter_error_description


class FlakyPoisonStore(InMemoryPoisonStore):
    """A poison store refusing a share of its writes (a missing role, a storage outage)."""

    def __init__(self, rng: random.Random, failure_rate: float) -> None:
        super().__init__()
        self._rng = rng
        self._failure_rate = failure_rate
        self.failures = 0

    async def park(
        self, event: DataverseEvent, reason: str, description: str, partition: str | None
    ) -> str:
        if self._rng.random() < self._failure_rate:
            self.failures += 1
            raise ServiceRequestError("injected: the poison container refused the write")
        return await super().park(event, reason, description, partition)


@dataclass
class RetryContext:
    retry_count: int
    max_retry_count: int = -1  # function_app.py: the policy never gives up
