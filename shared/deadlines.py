"""Deadlines for handlers, kept by one watchdog instead of a timer per call.

`asyncio.timeout()` around every handler call schedules and cancels a timer each time, which
more than doubled the dispatcher's overhead (benchmarks.dispatch: 2.7x -> 6.7x orjson.loads).
Here a call costs a dict insert and delete; one watchdog task per event loop wakes a few times
per deadline and cancels the tasks that ran past theirs. A deadline is then enforced within
`granularity` seconds of its time, which is what a lease-sized budget needs.
"""

from __future__ import annotations

import asyncio


class Deadlines:
    def __init__(self, granularity: float = 1.0, *, time_scale: float = 1.0) -> None:
        """`time_scale` < 1 runs deadlines faster than the clock (benchmarks.soak scales a
        300 s lease to 3 s this way)."""
        self.granularity = granularity * time_scale
        self.time_scale = time_scale
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self, seconds: float) -> asyncio.Task[object]:
        """Give the current task a deadline `seconds` from now; pair with `stop()` in a
        `finally`. Plain calls, not a context manager: this is on every handler's path."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        seconds *= self.time_scale
        self._due[task] = loop.time() + seconds
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            # (a loop closed with its watchdog pending leaves one that never runs again)
            self._watchdog = loop.create_task(self._expire(min(self.granularity, seconds / 4)))
        return task

    def expired(self, task: asyncio.Task[object]) -> bool:
        """After a CancelledError: whether the watchdog cancelled the task for its deadline.
        If so the cancellation is withdrawn, and the task goes on normally."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def stop(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    async def _expire(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, due in list(self._due.items()):
                if due <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
