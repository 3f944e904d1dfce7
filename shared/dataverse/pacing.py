"""How many requests a process keeps in flight to Dataverse: a limit that adapts.

Every instance of the app shares one application user's service protection limits (52
concurrent requests, 6,000 requests and 1,200,000 ms per 300 s, per web server), and no
instance knows how many others run. So each one adapts on its own signals, with no coordinator
to fail: additive increase (one more slot after a full limit's worth of successes) and
multiplicative decrease (half, at least one) on every 429 (a concurrency refusal, or a window
that is full). Instances that see the same refusals converge to their share, as TCP flows
sharing a link do; the `Retry-After` pause (client.py) is honoured on top.

`limit` and the counters are read by metrics and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType

CONCURRENCY_REFUSED = "0x80072326"


class AdaptiveLimit:
    """An async context manager like a semaphore, whose size moves between 1 and `ceiling`.
    Waiters queue in order and are woken one per free slot (a condition that woke them all
    would cost O(waiters) per release: measured, it tripled the client's CPU per request)."""

    def __init__(self, ceiling: int, *, adaptive: bool = True, floor: int = 1) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.adaptive = adaptive
        self.limit = self.ceiling
        self.in_flight = 0
        self.successes = 0  # since the last increase
        self.throttled = 0  # every 429 seen
        self.decreases = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the releaser counted the slot in for us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted, then cancelled: hand the slot on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def succeeded(self) -> None:
        """Additive increase: one slot more after `limit` successes in a row of throttles."""
        if not self.adaptive or self.limit >= self.ceiling:
            return
        self.successes += 1
        if self.successes >= self.limit:
            self.successes = 0
            self.limit += 1
            self._wake()

    def throttled_by(self, code: str | None) -> None:
        """Multiplicative decrease on a 429, whichever limit it names."""
        self.throttled += 1
        if not self.adaptive:
            return
        self.successes = 0
        self.limit = max(self.floor, self.limit // 2)
        self.decreases += 1
