"""Objects built the way the Functions host builds them: the host's data shapes fed to the real
converters of `azure.functions` and the Service Bus extension, so tests see exactly what a
trigger function receives. The shapes are the host's own (tests/host drives the real worker
with the same bytes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import azurefunctions.extensions.base as base
import azurefunctions.extensions.bindings.servicebus as sdk
from azure.functions import EventHubEvent, meta
from azure.functions.eventhub import EventHubTriggerConverter
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter
from azure.servicebus import ServiceBusReceivedMessage
from azurefunctions.extensions.bindings.servicebus import ServiceBusConverter

from shared import servicebus_binding
from tests.host.amqp import binding_content


def classic_service_bus_message(
    body: bytes,
    *,
    properties: Mapping[str, Any],
    content_type: str | None = "application/json",
    message_id: str = "message-1",
    delivery_count: int = 1,
    sequence_number: int = 1,
    enqueued_time: str = "2025-01-01T00:00:00Z",
) -> ServiceBusMessage:
    """A single-message Service Bus trigger invocation of the classic (non SDK-type) binding."""
    metadata = {
        "MessageId": meta.Datum(message_id, "string"),
        # The host sends numbers as JSON text.
        "DeliveryCount": meta.Datum(str(delivery_count), "json"),
        "SequenceNumber": meta.Datum(str(sequence_number), "json"),
        "EnqueuedTimeUtc": meta.Datum(enqueued_time, "string"),
        "ApplicationProperties": meta.Datum(json.dumps(dict(properties)), "json"),
        "UserProperties": meta.Datum(json.dumps(dict(properties)), "json"),
    }
    if content_type is not None:
        metadata["ContentType"] = meta.Datum(content_type, "string")
    message = ServiceBusMessageInConverter.decode(
        meta.Datum(body, "bytes"), trigger_metadata=metadata
    )
    assert isinstance(message, ServiceBusMessage)
    return message


def sdk_service_bus_message(
    body: bytes,
    *,
    properties: Mapping[str, Any],
    content_type: str | None = "application/json",
    message_id: str = "message-1",
    delivery_count: int = 1,
    lock_token: UUID | None = None,
) -> ServiceBusReceivedMessage:
    """A single-message invocation of the SDK-type binding: the host's `model_binding_data`
    (the lock token's 16 bytes, then the AMQP message: tests/host/amqp.py) through the
    extension's converter, with the app's decoder installed as function_app.py installs it."""
    servicebus_binding.install()
    content = binding_content(
        body,
        lock_token=lock_token or uuid4(),
        properties=properties,
        content_type=content_type,
        message_id=message_id,
        delivery_count=delivery_count,
    )
    binding_data = SimpleNamespace(
        version="1.0",
        source="AzureServiceBusReceivedMessage",
        content_type="application/octet-stream",
        content=content,
    )
    message = ServiceBusConverter.decode(
        base.Datum(binding_data, "model_binding_data"),
        trigger_metadata={},
        pytype=sdk.ServiceBusReceivedMessage,
    )
    assert isinstance(message, ServiceBusReceivedMessage)
    return message


def event_hub_events(
    bodies: Sequence[bytes],
    *,
    properties: Sequence[Mapping[str, Any]],
    partition: str = "0",
    first_sequence: int = 100,
) -> list[EventHubEvent]:
    """A `cardinality="many"` Event Hubs invocation with `dataType: binary`: the bodies as
    `collection_bytes`, per-event system and application properties as arrays in the trigger
    metadata, and the partition context."""
    system = [
        {
            "SequenceNumber": first_sequence + index,
            "Offset": str(4096 * (first_sequence + index)),
            "PartitionKey": None,
            "EnqueuedTimeUtc": "2025-01-01T00:00:00Z",
        }
        for index in range(len(bodies))
    ]
    metadata = {
        "SystemPropertiesArray": meta.Datum(json.dumps(system), "json"),
        "PropertiesArray": meta.Datum(json.dumps([dict(p) for p in properties]), "json"),
        "PartitionContext": meta.Datum(
            json.dumps(
                {"ConsumerGroup": "$Default", "EventHubName": "h", "PartitionId": partition}
            ),
            "json",
        ),
    }
    data = meta.Datum(SimpleNamespace(bytes=list(bodies)), "collection_bytes")
    events = EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
    assert isinstance(events, list)
    return events


class RecordingActions:
    """Stands in for `ServiceBusMessageActions` (whose calls go over gRPC to the host): it
    records each settlement and can be told to fail."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.fail_with = fail_with

    def _record(self, name: str, message: Any, **details: Any) -> None:
        self.calls.append((name, message, details))
        if self.fail_with is not None:
            raise self.fail_with

    def complete(self, message: Any) -> None:
        self._record("complete", message)

    def abandon(self, message: Any) -> None:
        self._record("abandon", message)

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        self._record(
            "deadletter",
            message,
            reason=deadletter_reason,
            description=deadletter_error_description,
        )

    @property
    def settlements(self) -> list[str]:
        return [name for name, _, _ in self.calls]
