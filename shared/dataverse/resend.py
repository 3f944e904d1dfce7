"""When a request to Dataverse is sent, and when it is sent again: the client's whole policy.

- 429 waits `Retry-After` and pauses every call of the process until then: no request leaves
  during the pause, calls queued for a concurrency slot included (all instances share one
  application user's limits; hammering a throttled server only extends the penalty);
- 503, and for idempotent requests 502/504, timeouts and dropped connections, are sent again
  after exponential backoff with full jitter;
- a POST is sent again only where the server cannot have processed it (the connection was never
  made, or Dataverse answered 429/503);
- each call has a time budget (waits included); a 429's pause, or a wait for the shared budget,
  may stretch it to `max_pause_seconds`; when the next wait would overrun that, a retryable
  `DataverseError` (`Throttled` for a 429 or the budget) is raised, so the message waits in the
  broker instead of dead-lettering;
- at most `AdaptiveLimit.limit` requests are in flight (pacing.py), and, when a shared budget
  is configured, none is sent without the window's room for it (budget.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from shared import metrics, tracing
from shared.deadlines import Deadlines
from shared.errors import DataverseError, Throttled

from .budget import SharedBudget
from .pacing import AdaptiveLimit
from .responses import error_code, error_from, retry_after


@dataclass(frozen=True)
class RetryPolicy:
    budget_seconds: float = 45.0
    # A 429's Retry-After is waited up to this long from the call's start, budget or not.
    max_pause_seconds: float = 120.0
    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 8.0


# One HTTP exchange, given the seconds it may take.
Exchange = Callable[[float], Awaitable[httpx.Response]]


class Resender:
    def __init__(
        self,
        retry: RetryPolicy,
        concurrency: AdaptiveLimit,
        budget: SharedBudget | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.retry = retry
        self.concurrency = concurrency
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.throttled_until = 0.0
        self.requests_sent = 0  # every HTTP request, retries included: for budgets and tests
        self._deadlines = Deadlines()

    async def send(
        self, exchange: Exchange, method: str, path: str, *, idempotent: bool
    ) -> httpx.Response:
        started = self._clock()
        deadline = started + self.retry.budget_seconds
        # A pause may run past the budget, up to this: waiting here is cheaper than a
        # redelivery, and the handler's own deadline (0.8 of the claim's lease) is further off.
        pause_deadline = started + max(self.retry.budget_seconds, self.retry.max_pause_seconds)
        attempt = 0
        while True:
            attempt += 1
            if self.throttled_until > self._clock():  # paused (no coroutine per call if not)
                await self._wait_out_pause(pause_deadline, method, path)
            delay: float | None = None
            try:
                async with self.concurrency:
                    if self.throttled_until > self._clock():
                        # A 429 came back while this call queued for a slot: no request may
                        # leave during the pause, queued or not.
                        attempt -= 1
                        continue
                    if self.budget is not None:
                        short = await self.budget.acquire(pause_deadline, self._clock)
                        if short is not None:
                            raise Throttled(
                                429,
                                "BudgetExhausted",
                                f"the shared request budget has room in {short:.1f} s, "
                                "beyond what a call waits",
                                retryable=True,
                                method=method,
                                url=path,
                            )
                    self.requests_sent += 1
                    response = await self._exchange(exchange, deadline, method, path, attempt)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                # The request never reached Dataverse: safe to send again, even a POST.
                failure = DataverseError(
                    None,
                    "ConnectionFailed",
                    f"could not reach Dataverse: {type(error).__name__}",
                    retryable=True,
                    method=method,
                    url=path,
                )
                can_retry = True
            except (httpx.TransportError, TimeoutError) as error:
                # Timed out or dropped after sending: Dataverse may have applied it.
                failure = DataverseError(
                    None,
                    "NoResponse",
                    f"no complete response from Dataverse: {type(error).__name__}",
                    retryable=True,
                    method=method,
                    url=path,
                )
                can_retry = idempotent
            else:
                if response.status_code < 400:
                    self.concurrency.succeeded()
                    return response
                failure = error_from(response, method, path)
                status = response.status_code
                if status == 401:
                    raise failure  # the auth flow already replayed it with a fresh token
                if status == 429:
                    self.concurrency.throttled_by(failure.code)
                    delay = retry_after(response, attempt)
                    self.throttled_until = max(self.throttled_until, self._clock() + delay)
                    can_retry = True  # refused outright: nothing was applied
                elif status == 503:
                    has_pause = "Retry-After" in response.headers
                    delay = retry_after(response, attempt) if has_pause else None
                    can_retry = True
                elif status in (502, 504):
                    can_retry = idempotent
                else:
                    raise failure
            if delay is None:
                ceiling = min(
                    self.retry.backoff_cap_seconds, self.retry.backoff_base_seconds * 2**attempt
                )
                delay = self._jitter(0.0, ceiling)
            if not can_retry or attempt >= self.retry.max_attempts:
                raise failure
            if self._clock() + delay >= (pause_deadline if failure.status == 429 else deadline):
                if failure.status == 429:
                    raise Throttled(
                        429,
                        failure.code,
                        f"Retry-After {delay:.1f} s is beyond what a call waits",
                        retryable=True,
                        request_id=failure.request_id,
                        method=method,
                        url=path,
                    )
                raise failure
            await self._sleep(delay)

    async def _exchange(
        self, exchange: Exchange, deadline: float, method: str, path: str, attempt: int
    ) -> httpx.Response:
        remaining = max(0.1, deadline - self._clock())
        # One deadline for the whole exchange: httpx's timeouts are per read, so a body
        # dripping a byte at a time would otherwise never time out. Kept by a watchdog, not
        # `asyncio.timeout()`: its timer cost 5 us of CPU per request, a fiftieth of the
        # client's (benchmarks/writeback.py (c)).
        with tracing.request_span(method, path, attempt) as span:
            task = self._deadlines.start(remaining)
            try:
                try:
                    response = await exchange(remaining)
                except asyncio.CancelledError:
                    if self._deadlines.expired(task):
                        raise TimeoutError(f"no whole response in {remaining:.1f} s") from None
                    raise
                finally:
                    self._deadlines.stop(task)
            except BaseException:
                tracing.record_response(span, None, None)
                metrics.request_done(None, None, None)
                raise
            code = error_code(response)
            tracing.record_response(span, response.status_code, code)
            pause = retry_after(response, attempt) if response.status_code == 429 else None
            metrics.request_done(response.status_code, code, pause)
            return response

    async def _wait_out_pause(self, deadline: float, method: str, path: str) -> None:
        """Called while the process is paused by a 429: wait it out, or raise `Throttled` when
        the pause ends past `deadline` (the call's start plus `max_pause_seconds`): the message
        then waits in the broker instead."""
        wait = self.throttled_until - self._clock()
        if self._clock() + wait >= deadline:
            raise Throttled(
                429,
                "Throttled",
                f"Dataverse asked to pause {wait:.1f} s, beyond what a call waits",
                retryable=True,
                method=method,
                url=path,
            )
        await self._sleep(wait)
