"""A request budget shared by every instance that writes as one application user.

Dataverse counts each user's requests in a sliding 300 s window (6,000 at most, Learn "Service
protection API limits"), and every instance of the app spends the same user's count. Adapting
concurrency alone (pacing.py) finds the limit by hitting it: a fleet of 8 still drew 429s on a
sixth of its requests (benchmarks/fleet.py). So the instances keep the window's count together,
in the app's Table storage, and take the right to send before sending.

The window is cut into `slots` slots. A ring of `slots + 3` rows (one partition) holds, per
slot, the number of requests granted in it. To take requests, an instance reads the ring,
sums the slots still inside the window (one slot more than the window, so that the slot
Dataverse is halfway through forgetting still counts, plus any slot ahead of this clock: an
instance whose clock runs ahead is counted too), and adds what it takes to the current slot
with the row's ETag; a conflict reads again. Granted requests are spent within their slot or
given back, so a grant never outlives the window it was counted in. No slot grants more than
twice its even share, so an empty window is spent over half of it, not in one burst.

It is not a new point of failure: when storage fails, the budget steps aside for
`FALLBACK_SECONDS` and the process sends as the adaptive limit and Retry-After allow; Dataverse
still enforces its limits either way. Clock skew up to one slot (15 s at the defaults) is
covered by the extra slot; the execution-time limit is left to the 429 path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shared import metrics

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

logger = logging.getLogger(__name__)

FALLBACK_SECONDS = 30.0
MAX_CONFLICTS = 8


@dataclass(frozen=True)
class Slot:
    ring: int  # position in the ring
    slot: int  # which slot of time it counts
    count: int
    etag: str | None


class Ring(Protocol):
    """Where the ring of slot counts is kept: the app's Table storage, or memory in tests."""

    async def read(self) -> list[Slot]: ...

    async def write(self, ring: int, slot: int, count: int, etag: str | None) -> bool:
        """Store `count` for `slot` at `ring` if the row still has `etag` (None: the row must
        not exist); False when another instance wrote first."""
        ...


class InMemoryRing:
    def __init__(self) -> None:
        self.rows: dict[int, Slot] = {}
        self._version = 0
        self.fail: Exception | None = None  # tests: storage that errors

    async def read(self) -> list[Slot]:
        if self.fail:
            raise self.fail
        return list(self.rows.values())

    async def write(self, ring: int, slot: int, count: int, etag: str | None) -> bool:
        if self.fail:
            raise self.fail
        current = self.rows.get(ring)
        if (current.etag if current else None) != etag:
            return False
        self._version += 1
        self.rows[ring] = Slot(ring, slot, count, str(self._version))
        return True


class TableRing:
    """The ring in the app's table (the idempotency claims' table, partition `budget:<key>`)."""

    def __init__(self, table: TableClient, key: str) -> None:
        from shared.storage import CreateOnce

        self._table = table
        self._partition = "budget:" + key
        self._ensure_table = CreateOnce(table.create_table)

    async def read(self) -> list[Slot]:
        await self._ensure_table()
        found = []
        async for row in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": self._partition}
        ):
            found.append(
                Slot(int(row["RowKey"]), int(row["Slot"]), int(row["Count"]), row.metadata["etag"])
            )
        return found

    async def write(self, ring: int, slot: int, count: int, etag: str | None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        # The slot as text: at short slots (the benchmarks') it outgrows Edm.Int32.
        entity: dict[str, str | int] = {
            "PartitionKey": self._partition,
            "RowKey": f"{ring:03d}",
            "Slot": str(slot),
            "Count": count,
        }
        try:
            if etag is None:
                await self._table.create_entity(entity)
            else:
                await self._table.update_entity(
                    entity, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True


class SharedBudget:
    """Grants the right to send, `requests` per `window_seconds` across every instance."""

    def __init__(
        self,
        ring: Ring,
        *,
        requests: int = 5700,  # 95% of Dataverse's 6,000: room for the health timer and tools
        window_seconds: float = 300.0,
        slots: int = 20,
        claim: int = 8,
        burst: float = 2.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ring = ring
        self.requests = requests
        self.window_seconds = window_seconds
        self.slots = slots
        self.slot_seconds = window_seconds / slots
        self.claim = claim  # the most one read of the ring takes for this process
        # No slot grants more than `burst` times its even share: an empty window would
        # otherwise go in one burst, over the 52 concurrent requests Dataverse allows.
        self.slot_cap = max(1, math.ceil(requests / slots * burst))
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._tokens = 0
        self._token_slot = -1
        self._fallback_until = 0.0
        self.waiting = 0
        self.granted = 0  # every request granted to this process
        self.waits = 0  # how often it had to wait for the window
        self.unavailable = 0  # storage failures
        self.refunded = 0  # tokens given back unspent at the end of their slot

    def _slot(self, now: float) -> int:
        return math.floor(now / self.slot_seconds)

    async def acquire(self, deadline: float, monotonic: Callable[[], float]) -> float | None:
        """Take one request's right to send, waiting for the window if need be. Returns None
        once granted, or the wait still needed when it would end past `deadline` (a time on
        the `monotonic` clock): the caller then gives the message back to the broker."""
        self.waiting += 1
        try:
            while True:
                now = self._clock()
                if now < self._fallback_until:
                    return None
                if self._tokens and self._token_slot == self._slot(now):
                    self._tokens -= 1
                    return None
                async with self._lock:
                    now = self._clock()
                    if now < self._fallback_until or (
                        self._tokens and self._token_slot == self._slot(now)
                    ):
                        continue  # another task filled the tokens, or storage failed
                    wait = await self._take()
                if wait is None:
                    continue
                if monotonic() + wait >= deadline:
                    return wait
                self.waits += 1
                metrics.budget_waited(wait)
                await self._sleep(wait)
        finally:
            self.waiting -= 1

    async def _refund(self, rows: list[Slot]) -> None:
        """Give back the tokens of a slot that ended before they were spent: those requests
        were never sent, and a token is never carried into the next slot (Dataverse would
        remember its request longer than the ring does). If another instance wrote the row
        first, they stay counted: a little budget lost, never an overshoot."""
        position = self._token_slot % (self.slots + 3)
        held = next((row for row in rows if row.ring == position), None)
        if held is not None and held.slot == self._token_slot:
            left = max(0, held.count - self._tokens)
            if await self.ring.write(position, held.slot, left, held.etag):
                self.granted -= self._tokens
                self.refunded += self._tokens
        self._tokens = 0

    async def _take(self) -> float | None:
        """Fill the process's tokens from the ring: None when some were granted (or storage
        failed), else the seconds until the window has room."""
        try:
            for _ in range(MAX_CONFLICTS):
                now = self._clock()
                current = self._slot(now)
                rows = await self.ring.read()
                if self._tokens and self._token_slot != current:
                    await self._refund(rows)
                    continue
                # Ahead of this clock by up to two slots: another instance's clock is fast.
                counted = [row for row in rows if current - self.slots <= row.slot <= current + 2]
                room = self.requests - sum(row.count for row in counted)
                if room <= 0:
                    oldest = min(row.slot for row in counted if row.count)
                    leaves = (oldest + self.slots + 1) * self.slot_seconds
                    return max(0.05, leaves - now)
                position = current % (self.slots + 3)
                held = next((row for row in rows if row.ring == position), None)
                count = held.count if held and held.slot == current else 0
                etag = held.etag if held else None
                if count >= self.slot_cap:
                    return max(0.01, (current + 1) * self.slot_seconds - now)
                wanted = min(room, self.slot_cap - count, self.claim, max(1, self.waiting))
                if await self.ring.write(position, current, count + wanted, etag):
                    self._tokens, self._token_slot = wanted, current
                    self.granted += wanted
                    return None
            return 0.0  # contended: read again at once
        except Exception as error:  # storage is down: do not become the failure
            self.unavailable += 1
            self._fallback_until = self._clock() + FALLBACK_SECONDS
            metrics.budget_unavailable()
            logger.warning(
                "shared request budget unavailable (%s): pacing locally for %.0f s",
                type(error).__name__,
                FALLBACK_SECONDS,
            )
            return None
