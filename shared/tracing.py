"""Spans through the OpenTelemetry API and its global provider, so whatever exporter the
operator configures (Azure Monitor, OTLP, a test's in-memory one) receives them:

- one CONSUMER span per event, `process <transport>`, with the messaging conventions
  (`messaging.system`, `messaging.message.id`, `messaging.operation.type`, the delivery count)
  and Dataverse's identifiers (`dataverse.correlation_id`, `dataverse.operation_id`,
  `dataverse.table`, `dataverse.message`), then `dataverse.outcome` and
  `dataverse.outcome.reason`; linked to the sender's trace when the message carries a
  `traceparent` or `Diagnostic-Id`;
- one INTERNAL span per handler run, `handler <module.function>`;
- one CLIENT span per Dataverse request, `<METHOD> <entity set>`, with `http.request.method`,
  `http.response.status_code`, `dataverse.error_code` and `dataverse.attempt`; its URL is
  redacted (no key values, no query).

No attribute carries a column value. With no provider configured, the API's no-op tracer costs
a few microseconds an event.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.redaction import redact

TRACER_NAME = "dataverse-event-consumers"
_SYSTEMS = {"servicebus": "servicebus", "eventhub": "eventhubs"}
_PROPAGATOR = TraceContextTextMapPropagator()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


if "OTEL_PYTHON_TRACER_PROVIDER" in os.environ:  # OpenTelemetry's own variable
    trace.get_tracer_provider()  # loads the configured provider now: enabled() reads the global


def enabled() -> bool:
    """Whether a tracer provider is installed: without one the app skips its spans entirely
    (even the API's no-op spans cost a dispatch that is itself a few microseconds). Reads the
    API's global directly: `get_tracer_provider()` looks up an environment variable each call."""
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    return provider is not None and not isinstance(provider, trace.NoOpTracerProvider)


def upstream_links(properties: Mapping[str, Any]) -> list[Link]:
    """A link to the trace the sender's message names (W3C traceparent, or Diagnostic-Id)."""
    for key in ("traceparent", "Diagnostic-Id", "diagnostic-id"):
        value = properties.get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and value.count("-") == 3:
            carried = _PROPAGATOR.extract({"traceparent": value})
            context = trace.get_current_span(carried).get_span_context()
            if context.is_valid:
                return [Link(context)]
    return []


@contextmanager
def event_span(
    transport: str,
    message_id: str | None,
    delivery_count: int | None,
    properties: Mapping[str, Any],
) -> Iterator[Span]:
    attributes: dict[str, Any] = {
        "messaging.system": _SYSTEMS.get(transport, transport),
        "messaging.operation.type": "process",
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if delivery_count is not None:
        attributes["messaging.servicebus.message.delivery_count"] = delivery_count
    with tracer().start_as_current_span(
        f"process {transport}",
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=upstream_links(properties) if properties else None,
        record_exception=True,
    ) as span:
        yield span


def describe_context(span: Span, context: Any) -> None:
    """Dataverse's identifiers of the event, read undecoded (never a column value)."""
    if not span.is_recording():
        return
    for attribute, member in (
        ("dataverse.correlation_id", "CorrelationId"),
        ("dataverse.operation_id", "OperationId"),
        ("dataverse.table", "PrimaryEntityName"),
        ("dataverse.message", "MessageName"),
    ):
        value = context.raw(member)
        if isinstance(value, str) and value:
            span.set_attribute(attribute, value[:128])
    try:  # end-to-end lag, for the workbook's percentiles and the lag alert
        created = context.operation_created_on
    except Exception:
        return
    if isinstance(created, datetime) and created.year > 1601:
        span.set_attribute(
            "dataverse.lag_s", max(0.0, (datetime.now(UTC) - created).total_seconds())
        )


def record_outcome(span: Span, outcome: Any) -> None:
    if not span.is_recording():
        return
    kind = type(outcome).__name__
    span.set_attribute("dataverse.outcome", kind)
    reason = getattr(outcome, "reason", None)
    if reason:
        span.set_attribute("dataverse.outcome.reason", str(reason))
    if kind == "DeadLetter":
        span.set_status(Status(StatusCode.ERROR, str(reason)))


# What a span's place holds without a provider: nothing to enter or end, shared by all.
NO_SPAN: AbstractContextManager[None] = nullcontext()


def handler_span(name: str) -> AbstractContextManager[Any]:
    if not enabled():
        return NO_SPAN
    return tracer().start_as_current_span(f"handler {name}", attributes={"dataverse.handler": name})


# A request's span without a provider: INVALID_SPAN, which records nothing.
_NO_REQUEST_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def request_span(method: str, path: str, attempt: int) -> AbstractContextManager[Span]:
    if not enabled():
        return _NO_REQUEST_SPAN  # a generator's context manager cost microseconds per request
    entity_set = path.split("(", 1)[0].split("/", 1)[0].split("?", 1)[0]
    return tracer().start_as_current_span(
        f"{method} {entity_set}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "url.path": redact(path.split("?", 1)[0])[:256],
            "dataverse.attempt": attempt,
        },
    )


def record_response(span: Span, status: int | None, code: str | None) -> None:
    if not span.is_recording():
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if code:
        span.set_attribute("dataverse.error_code", code)
    if status is None or status >= 400:
        span.set_status(Status(StatusCode.ERROR))
