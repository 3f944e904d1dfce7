"""Structured logging: every line of an invocation names its message, operation and handler.

The dispatcher sets the fields for the event it processes; a logging filter copies them onto
every record logged meanwhile (by this app or a handler), so they reach Application Insights as
custom dimensions. Attribute values never go into these fields; `LOG_ATTRIBUTE_VALUES` is the
only switch that lets handlers' own value logging through `log_values()`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from shared import redaction

FIELDS = (
    "message_id",
    "correlation_id",
    "operation_id",
    "entity",
    "message_name",
    "handler",
)


logger = logging.getLogger("dataverse")


class EventScope:
    """What the log lines of one event name. The dispatcher fills it as it learns more (the
    context once decoded, the handler while it runs); fields are derived only when a record is
    actually logged, so an event that logs nothing pays one context-variable switch."""

    __slots__ = ("context", "handler", "message_id")

    def __init__(self, message_id: str | None) -> None:
        self.message_id = message_id
        self.context: Any = None
        self.handler: str | None = None

    def fields(self) -> dict[str, str]:
        found = {"message_id": self.message_id or "", "handler": self.handler or ""}
        context = self.context
        if context is not None:
            found["correlation_id"] = context.raw("CorrelationId") or ""
            found["operation_id"] = context.raw("OperationId") or ""
            found["entity"] = context.raw("PrimaryEntityName") or ""
            found["message_name"] = context.raw("MessageName") or ""
        return found


SCOPE: ContextVar[EventScope | None] = ContextVar("dataverse_event_scope", default=None)


class _EventFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        scope = SCOPE.get()
        current = scope.fields() if scope is not None else {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, str(current.get(name, "")))
        return True


_filter = _EventFields()


def install() -> None:
    """Attach the event fields to every handler of the root logger (idempotent), and start
    OpenTelemetry export to Application Insights when its connection string is set."""
    root = logging.getLogger()
    for handler in root.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    quiet_libraries()
    _start_azure_monitor()


# Loggers that write INFO lines per message or request, which the worker forwards to the host
# (its root logger is at INFO): uamqp's C layer logs nine lines for every Service Bus message
# the binding decodes.
# uamqp is chatty; httpx logs every request URL at INFO, with $filter literals and key values.
NOISY_LOGGERS = ("uamqp", "httpx", "httpcore")


def quiet_libraries() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


_monitor_started = False


def _start_azure_monitor() -> None:
    global _monitor_started
    if _monitor_started or not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return
    if os.environ.get("DATAVERSE_OPENTELEMETRY", "").lower() not in ("1", "true"):
        return  # off: no spans or metrics leave the process
    from azure.monitor.opentelemetry import configure_azure_monitor

    # The app's spans and metrics (shared/tracing.py, shared/metrics.py). Not its logs: the
    # Functions host already sends those to Application Insights, and twice would be noise.
    configure_azure_monitor(logger_name="dataverse", disable_logging=True)
    _monitor_started = True


@contextmanager
def event_scope(message_id: str | None) -> Iterator[EventScope]:
    """Within the block, log records carry the fields of this event's scope."""
    scope = EventScope(message_id)
    token = SCOPE.set(scope)
    try:
        yield scope
    finally:
        SCOPE.reset(token)


def current_fields() -> dict[str, str]:
    scope = SCOPE.get()
    return scope.fields() if scope is not None else {}


def allow_values(allowed: bool) -> None:
    """Set once from LOG_ATTRIBUTE_VALUES; the switch itself lives in shared.redaction."""
    redaction.allow_values(allowed)
    # Request URLs carry values: httpx's INFO lines only when values are allowed.
    logging.getLogger("httpx").setLevel(logging.INFO if allowed else logging.WARNING)


def log_values(message: str, values: dict[str, Any]) -> None:
    """Log attribute values only when LOG_ATTRIBUTE_VALUES is on; otherwise their names."""
    if redaction.values_allowed():
        logger.info("%s: %s", message, values)
    else:
        logger.info("%s: columns %s (values hidden)", message, sorted(values))
