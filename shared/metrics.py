"""Metrics through the OpenTelemetry API and its global meter provider (Azure Monitor when
DATAVERSE_OPENTELEMETRY is on, or whatever the operator installs):

| name | kind, unit | attributes |
|---|---|---|
| `dataverse.events` | counter, `{event}` | `dataverse.outcome`, `.reason`, `messaging.system` |
| `dataverse.event.lag` | histogram, `s` | `dataverse.outcome`: now minus OperationCreatedOn |
| `dataverse.handler.duration` | histogram, `s` | `dataverse.handler` |
| `dataverse.requests` | counter, `{request}` | `http.response.status_code` (0: no response) |
| `dataverse.throttled` | counter, `{response}` | `dataverse.error_code`: the 429s, per limit |
| `dataverse.retry_after` | histogram, `s` | the pauses Dataverse asked for |
| `dataverse.claim.wait` | histogram, `s` | `dataverse.claim.state`: waits on a held claim |
| `dataverse.canary.delay` | histogram, `s` | `dataverse.path`: canary sent to arrived |
| `dataverse.client.concurrency_limit` | gauge, `{request}` | the adaptive limits, summed |
| `dataverse.budget.wait` | histogram, `s` | waits for the shared request budget's window |
| `dataverse.budget.unavailable` | counter, `{error}` | storage failures of the shared budget |

A DeadLetter on `eventhubs` is a parked event. Names and units follow the OpenTelemetry
conventions; no attribute carries a column value.
Without a provider, nothing is recorded and nothing costs.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Observation
from opentelemetry.metrics import _internal as _metrics_state

METER_NAME = "dataverse-event-consumers"


if "OTEL_PYTHON_METER_PROVIDER" in os.environ:  # OpenTelemetry's own variable
    metrics.get_meter_provider()  # loads the configured provider now: enabled() reads the global


def enabled() -> bool:
    """Whether a meter provider is installed (read from the API's global, as in tracing.py)."""
    provider = getattr(_metrics_state, "_METER_PROVIDER", None)
    return provider is not None and type(provider).__name__ != "NoOpMeterProvider"


def meter() -> metrics.Meter:
    return metrics.get_meter(METER_NAME)


@cache
def _instruments(meter_id: int) -> dict[str, Any]:
    current = meter()
    return {
        "events": current.create_counter("dataverse.events", unit="{event}"),
        "lag": current.create_histogram("dataverse.event.lag", unit="s"),
        "handler": current.create_histogram("dataverse.handler.duration", unit="s"),
        "requests": current.create_counter("dataverse.requests", unit="{request}"),
        "throttled": current.create_counter("dataverse.throttled", unit="{response}"),
        "retry_after": current.create_histogram("dataverse.retry_after", unit="s"),
        "claim_wait": current.create_histogram("dataverse.claim.wait", unit="s"),
        "canary": current.create_histogram("dataverse.canary.delay", unit="s"),
        "budget_wait": current.create_histogram("dataverse.budget.wait", unit="s"),
        "budget_unavailable": current.create_counter(
            "dataverse.budget.unavailable", unit="{error}"
        ),
        "limit": current.create_observable_gauge(
            "dataverse.client.concurrency_limit", callbacks=[_limits], unit="{request}"
        ),
    }


# The adaptive limits of the live clients (shared/dataverse/pacing.py), read when exported.
_tracked: weakref.WeakSet[Any] = weakref.WeakSet()


def track(limit: Any) -> None:
    _tracked.add(limit)
    if enabled():
        instruments()  # the gauge exists from the first client on


def _limits(options: Any) -> Iterator[Observation]:
    """The process's in-flight allowance to Dataverse now: the sum of its clients' limits
    (usually one client a process)."""
    yield Observation(sum(limit.limit for limit in list(_tracked)))


def instruments() -> dict[str, Any]:
    return _instruments(id(metrics.get_meter_provider()))


def event_done(outcome: Any, context: Any, transport: str = "") -> None:
    if not enabled():
        return
    found = instruments()
    attributes = {
        "dataverse.outcome": type(outcome).__name__,
        "messaging.system": "eventhubs" if transport == "eventhub" else transport,
    }
    reason = getattr(outcome, "reason", None)
    if reason:
        attributes["dataverse.outcome.reason"] = str(reason)
    found["events"].add(1, attributes)
    if context is not None:
        try:
            created = context.operation_created_on
        except Exception:  # an unreadable date: no lag to tell
            return
        if isinstance(created, datetime) and created.year > 1601:
            lag = (datetime.now(UTC) - created).total_seconds()
            found["lag"].record(max(0.0, lag), {"dataverse.outcome": type(outcome).__name__})


def handler_ran(name: str, seconds: float) -> None:
    if enabled():
        instruments()["handler"].record(seconds, {"dataverse.handler": name})


def request_done(status: int | None, code: str | None, retry_after: float | None) -> None:
    if not enabled():
        return
    found = instruments()
    found["requests"].add(1, {"http.response.status_code": status or 0})
    if status == 429:
        found["throttled"].add(1, {"dataverse.error_code": code or ""})
        if retry_after is not None:
            found["retry_after"].record(retry_after)


def claim_waited(seconds: float, state: str) -> None:
    if enabled():
        instruments()["claim_wait"].record(seconds, {"dataverse.claim.state": state})


def canary_delivered(path: str, seconds: float) -> None:
    if enabled():
        instruments()["canary"].record(seconds, {"dataverse.path": path[:128]})


def budget_waited(seconds: float) -> None:
    if enabled():
        instruments()["budget_wait"].record(seconds)


def budget_unavailable() -> None:
    if enabled():
        instruments()["budget_unavailable"].add(1)
