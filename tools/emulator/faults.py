"""Failures on demand, for tests and benchmarks: the next requests fail (429 with Retry-After,
503, any status) or wait, by method and path; or a seeded share of all requests fails."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from tools.emulator.wire import BAD_REQUEST, THROTTLED, UNAVAILABLE, WebApiError


@dataclass
class Fault:
    status: int | None
    count: int
    retry_after: float | None
    method: str | None
    path_contains: str | None
    delay: float


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self.queue: deque[Fault] = deque()
        self.rate = 0.0
        self.statuses: tuple[int, ...] = (429, 503)
        self.retry_after = 1.0
        self._random = random.Random(seed)

    def next(self, method: str, path: str) -> Fault | None:
        """The fault this request meets: the first queued one that matches, else a random one
        at the configured rate, else none."""
        for fault in self.queue:
            if (fault.method is None or fault.method == method) and (
                fault.path_contains is None or fault.path_contains in path
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self.queue.remove(fault)
                return fault
        if self.rate and self._random.random() < self.rate:
            status = self._random.choice(self.statuses)
            return Fault(status, 1, self.retry_after, None, None, 0.0)
        return None


def fault_error(status: int, retry_after: float | None) -> WebApiError:
    """The error Dataverse answers with for that status."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    if status == 429:
        return WebApiError(
            429,
            THROTTLED,
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
            headers,
        )
    if status == 503:
        return WebApiError(503, UNAVAILABLE, "The service is temporarily unavailable.", headers)
    return WebApiError(status, BAD_REQUEST, f"Injected failure {status}", headers)
