"""Spans per event, per handler and per Dataverse request, seen by an in-memory exporter: the
tree, the messaging and Dataverse attributes, the outcome, and no column value anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.dataverse import DataverseClient
from shared.dispatch import Completed, DeadLetter, Dispatcher, Retry
from shared.errors import TransientError
from shared.routing import Router
from shared.settings import Settings
from tests.dataverse_doubles import emulated_client
from tests.events import ORGANIZATION_ID, event
from tools.emulator import DataverseEmulator

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer(tracing.TRACER_NAME))
    monkeypatch.setattr(tracing, "enabled", lambda: True)
    yield exporter
    provider.shutdown()


@pytest.fixture
async def dataverse() -> AsyncIterator[tuple[DataverseClient, DataverseEmulator]]:
    emulator = DataverseEmulator()
    async with emulated_client(emulator) as client:
        yield client, emulator


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def by_name(finished: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name.startswith(prefix)]


def make_dispatcher(client: DataverseClient, fail: bool = False) -> Dispatcher:
    router = Router()

    @router.on(entity="contact", message="Update")
    async def mark(context: object, dataverse: DataverseClient) -> None:
        if fail:
            raise TransientError("not yet")
        await dataverse.upsert("contacts", context.primary_entity_id, {"lastname": "Davolio"})  # type: ignore[attr-defined]

    return Dispatcher(router, client, Settings(allowed_organizations=frozenset({ORGANIZATION_ID})))


async def test_an_event_is_one_consumer_span_with_its_handler_and_requests_beneath(
    spans: InMemorySpanExporter, dataverse: tuple[DataverseClient, DataverseEmulator]
) -> None:
    client, _ = dataverse
    properties = {"traceparent": TRACEPARENT}
    outcome = await make_dispatcher(client).process(
        event("contact-update.json", properties={**properties, **event().properties})
    )
    assert isinstance(outcome, Completed)
    finished = spans.get_finished_spans()
    (root,) = by_name(finished, "process ")
    (handler,) = by_name(finished, "handler ")
    (request,) = by_name(finished, "PATCH ")
    assert root.kind == SpanKind.CONSUMER
    assert attrs(root)["messaging.system"] == "servicebus"
    assert attrs(root)["messaging.message.id"] == "message-1"
    assert attrs(root)["dataverse.table"] == "contact"
    assert attrs(root)["dataverse.message"] == "Update"
    assert attrs(root)["dataverse.operation_id"] == "0e000000-0000-4000-8000-000000000002"
    assert attrs(root)["dataverse.outcome"] == "Completed"
    assert handler.parent is not None
    assert handler.parent.span_id == root.context.span_id
    assert request.parent is not None
    assert request.parent.span_id == handler.context.span_id
    assert request.kind == SpanKind.CLIENT
    assert attrs(request)["http.response.status_code"] == 204
    assert attrs(request)["dataverse.attempt"] == 1
    (link,) = root.links
    assert format(link.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    values = [str(v) for span in finished for v in (span.attributes or {}).values()]
    assert not any("example.com" in value or "Davolio" in value for value in values)


async def test_dead_letters_retries_and_throttled_writes_are_on_their_spans(
    spans: InMemorySpanExporter, dataverse: tuple[DataverseClient, DataverseEmulator]
) -> None:
    client, emulator = dataverse
    dead = await make_dispatcher(client).process(event(body=b"not a context"))
    assert isinstance(dead, DeadLetter)
    retried = await make_dispatcher(client, fail=True).process(event("contact-update.json"))
    assert isinstance(retried, Retry)
    emulator.inject(429, retry_after=1)
    throttled = await make_dispatcher(client).process(
        event("contact-update.json", message_id="message-2")
    )
    assert isinstance(throttled, Completed)  # waited out Retry-After, then written
    roots = by_name(spans.get_finished_spans(), "process ")
    outcomes = [
        (attrs(s)["dataverse.outcome"], attrs(s).get("dataverse.outcome.reason")) for s in roots
    ]
    assert outcomes[0][0] == "DeadLetter"
    assert outcomes[1][0] == "Retry"
    assert outcomes[1][1]  # the reason a human reads
    assert outcomes[2][0] == "Completed"
    attempts = [
        (attrs(s)["http.response.status_code"], attrs(s).get("dataverse.error_code"))
        for s in by_name(spans.get_finished_spans(), "PATCH ")
    ]
    assert attempts[-2:] == [(429, "0x80072322"), (204, None)]


def test_without_a_provider_no_span_is_made() -> None:
    assert tracing.enabled() is False  # the suite installs no global provider


@pytest.fixture
def meters(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared import metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(metrics, "meter", lambda: provider.get_meter(metrics.METER_NAME))
    monkeypatch.setattr(metrics, "enabled", lambda: True)
    metrics._instruments.cache_clear()
    yield reader
    metrics._instruments.cache_clear()
    provider.shutdown()


def points(reader: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_events_handlers_requests_and_throttling_are_counted(
    meters: Any, dataverse: tuple[DataverseClient, DataverseEmulator]
) -> None:
    client, emulator = dataverse
    emulator.inject(429, retry_after=1)
    await make_dispatcher(client).process(event("contact-update.json"))
    await make_dispatcher(client).process(event(body=b"not a context", message_id="m-2"))
    found = points(meters)
    outcomes = {
        (p.attributes["dataverse.outcome"], p.attributes.get("dataverse.outcome.reason")): p.value
        for p in found["dataverse.events"]
    }
    assert outcomes[("Completed", None)] == 1
    assert {p.attributes["messaging.system"] for p in found["dataverse.events"]} == {"servicebus"}
    assert sum(v for (kind, _), v in outcomes.items() if kind == "DeadLetter") == 1
    (lag,) = found["dataverse.event.lag"]
    assert lag.count == 1
    assert lag.sum > 0  # the fixture's operation is years old
    (handler,) = found["dataverse.handler.duration"]
    assert handler.attributes["dataverse.handler"].endswith("mark")
    statuses = {
        p.attributes["http.response.status_code"]: p.value for p in found["dataverse.requests"]
    }
    assert statuses == {429: 1, 204: 1}
    (throttled,) = found["dataverse.throttled"]
    assert throttled.attributes["dataverse.error_code"] == "0x80072322"
    (pause,) = found["dataverse.retry_after"]
    assert pause.sum == 1.0
    values = [str(v) for points_ in found.values() for p in points_ for v in p.attributes.values()]
    assert not any("example.com" in value for value in values)


def test_the_app_exports_spans_and_metrics_itself_and_leaves_logs_to_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    from shared import observability

    calls: list[dict[str, Any]] = []
    distro = types.ModuleType("azure.monitor.opentelemetry")
    distro.configure_azure_monitor = lambda **options: calls.append(options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", distro)
    monkeypatch.setattr(observability, "_monitor_started", False)
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=x")
    monkeypatch.setenv("DATAVERSE_OPENTELEMETRY", "false")
    observability._start_azure_monitor()
    assert calls == []  # off unless asked
    monkeypatch.setenv("DATAVERSE_OPENTELEMETRY", "true")
    observability._start_azure_monitor()
    assert calls == [{"logger_name": "dataverse", "disable_logging": True}]


def test_azure_gets_the_apps_own_export_and_the_host_mode_stays_off() -> None:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bicep = (root / "infra" / "main.bicep").read_text()
    assert "{ name: 'DATAVERSE_OPENTELEMETRY', value: 'true' }" in bicep
    host = json.loads((root / "host.json").read_text())
    assert "telemetryMode" not in host  # the host's OpenTelemetry mode would export logs twice


async def test_the_service_bus_handling_the_trigger_calls_makes_the_same_tree(
    spans: InMemorySpanExporter, dataverse: tuple[DataverseClient, DataverseEmulator]
) -> None:
    from shared.servicebus import handle_message
    from tools.demo import Settlement
    from tools.emulator.posting import PostedMessage

    client, _ = dataverse
    source = event("contact-update.json")
    from datetime import UTC, datetime

    message = PostedMessage(
        endpoint="contoso-events",
        contract=6,
        path="dataverse-events",
        body=source.body,
        content_type="application/json",
        application_properties=dict(source.properties),
        message_id="sb-1",
        sequence_number=1,
        enqueued_time_utc=datetime.now(UTC),
    )
    settlement = Settlement()
    await handle_message(make_dispatcher(client), message, settlement)
    assert settlement.settled == {"sb-1": "completed"}
    finished = spans.get_finished_spans()
    (root,) = by_name(finished, "process ")
    assert attrs(root)["messaging.message.id"] == "sb-1"
    assert attrs(root)["messaging.servicebus.message.delivery_count"] == 1
    assert attrs(root)["dataverse.lag_s"] > 0
    assert by_name(finished, "handler ")
    assert by_name(finished, "PATCH ")


async def test_each_clients_adaptive_limit_is_a_gauge(
    meters: Any, dataverse: tuple[DataverseClient, DataverseEmulator]
) -> None:
    from shared import metrics

    client, _ = dataverse
    client.concurrency.throttled_by("0x80072326")  # halved
    assert client.concurrency.limit == 4
    import gc

    gc.collect()  # other tests' clients: only the live ones stay tracked
    expected = sum(limit.limit for limit in list(metrics._tracked))
    (point,) = points(meters)["dataverse.client.concurrency_limit"]
    assert point.value == expected
    assert client.concurrency in metrics._tracked
