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
from types import TracebackType

CONCURRENCY_REFUSED = "0x80072326"


class AdaptiveLimit:
    """An async context manager like a semaphore, whose size moves between 1 and `ceiling`."""

    def __init__(self, ceiling: int, *, adaptive: bool = True, floor: int = 1) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.adaptive = adaptive
        self.limit = self.ceiling
        self.in_flight = 0
        self.successes = 0  # since the last increase
        self.throttled = 0  # every 429 seen
        self.decreases = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def succeeded(self) -> None:
        """Additive increase: one slot more after `limit` successes in a row of throttles."""
        if not self.adaptive or self.limit >= self.ceiling:
            return
        self.successes += 1
        if self.successes >= self.limit:
            self.successes = 0
            self.limit += 1  # waiters see it at the next release, which follows at once

    def throttled_by(self, code: str | None) -> None:
        """Multiplicative decrease on a 429, whichever limit it names."""
        self.throttled += 1
        if not self.adaptive:
            return
        self.successes = 0
        self.limit = max(self.floor, self.limit // 2)
        self.decreases += 1
