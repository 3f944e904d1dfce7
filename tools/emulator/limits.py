"""Dataverse's service protection limits, enforced per user when a test or benchmark asks
(`DataverseEmulator(limits=ServiceProtection())`; off by default).

Learn, "Service protection API limits": per user and per web server, over a 300-second sliding
window, at most 6,000 requests and 1,200,000 ms of combined execution time, and at most 52
concurrent requests (not windowed). Over a limit Dataverse answers 429 with a Retry-After in
seconds and an error code per limit:

    -2147015902 (0x80072322)  Number of requests exceeded the limit of 6000 over time window of
                              300 seconds.
    -2147015903 (0x80072321)  Combined execution time of incoming requests exceeded limit of
                              1,200,000 milliseconds over time window of 300 seconds. ...
    -2147015898 (0x80072326)  Number of concurrent requests exceeded the limit of 52.

Retry-After is when the window has room again: the oldest request leaving it (requests), or
enough execution time leaving it (execution time); one second for concurrency, which frees as
requests finish. Execution time comes from a cost model (`cost_ms`, per request; a `$batch`
counts each operation it carries, for requests and for time: an assumption, as Learn does not
say how a batch is counted). `servers` spreads users' requests over several web servers, each
with its own counters, as Dataverse's load balancer does.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

REQUESTS = "0x80072322"
EXECUTION_TIME = "0x80072321"
CONCURRENCY = "0x80072326"


@dataclass
class _Call:
    at: float
    weight: int  # operations it carries: 1, or a $batch's parts
    ms: float = 0.0  # its execution time, once it is done


@dataclass
class _Usage:
    calls: deque[_Call] = field(default_factory=deque)
    requests: int = 0
    execution_ms: float = 0.0
    in_flight: int = 0


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    retry_after: float


@dataclass
class ServiceProtection:
    requests: int = 6000
    execution_ms: float = 1_200_000.0
    concurrent: int = 52
    window_seconds: float = 300.0
    cost_ms: float = 20.0  # execution time per operation, by default
    servers: int = 1
    clock: Callable[[], float] = time.monotonic
    _usage: dict[tuple[str, int], _Usage] = field(default_factory=dict)
    _turn: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    def _expire(self, usage: _Usage, now: float) -> None:
        while usage.calls and usage.calls[0].at <= now - self.window_seconds:
            call = usage.calls.popleft()
            usage.requests -= call.weight
            usage.execution_ms -= call.ms

    def server_for(self, user: str) -> int:
        """Round-robin across web servers, as a load balancer would spread one user's calls."""
        self._turn = (self._turn + 1) % max(1, self.servers)
        return self._turn

    def admit(self, user: str, server: int, operations: int = 1) -> Refusal | _Call:
        """Count a request in (its handle for `finish`), or the refusal Dataverse answers."""
        usage = self._usage.setdefault((user, server), _Usage())
        now = self.clock()
        self._expire(usage, now)
        refusal = None
        if usage.in_flight >= self.concurrent:
            refusal = Refusal(
                CONCURRENCY,
                f"Number of concurrent requests exceeded the limit of {self.concurrent}.",
                1.0,
            )
        elif usage.requests + operations > self.requests:
            refusal = Refusal(
                REQUESTS,
                f"Number of requests exceeded the limit of {self.requests} over time window of "
                f"{self.window_seconds:.0f} seconds.",
                self._until_requests_free(usage, now, operations),
            )
        elif usage.execution_ms >= self.execution_ms:
            refusal = Refusal(
                EXECUTION_TIME,
                f"Combined execution time of incoming requests exceeded limit of "
                f"{self.execution_ms:,.0f} milliseconds over time window of "
                f"{self.window_seconds:.0f} seconds. Decrease number of concurrent requests or "
                "reduce the duration of requests and try again later.",
                self._until_time_free(usage, now),
            )
        if refusal is not None:
            self.refusals[refusal.code] = self.refusals.get(refusal.code, 0) + 1
            return refusal
        usage.in_flight += 1
        call = _Call(now, operations)
        usage.calls.append(call)
        usage.requests += operations
        return call

    def finish(self, user: str, server: int, call: _Call) -> None:
        """Count a request's execution time once it is done."""
        usage = self._usage[(user, server)]
        usage.in_flight -= 1
        call.ms = self.cost_ms * call.weight
        if call in usage.calls:  # not yet expired from the window
            usage.execution_ms += call.ms

    def _until_requests_free(self, usage: _Usage, now: float, operations: int) -> float:
        needed = usage.requests + operations - self.requests
        freed = 0
        for call in usage.calls:
            freed += call.weight
            if freed >= needed:
                return max(1.0, math.ceil(call.at + self.window_seconds - now))
        return self.window_seconds

    def _until_time_free(self, usage: _Usage, now: float) -> float:
        excess = usage.execution_ms - self.execution_ms
        freed = 0.0
        for call in usage.calls:
            freed += call.ms
            if freed > excess:
                return max(1.0, math.ceil(call.at + self.window_seconds - now))
        return self.window_seconds
