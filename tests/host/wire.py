"""Invocation data exactly as the Functions host sends it to a Python worker.

- Service Bus, SDK-type binding: ModelBindingData (version 1.0, source
  `AzureServiceBusReceivedMessage`, `application/octet-stream`) with the content of
  tests/host/amqp.py.
- Service Bus trigger metadata: the host's binding data (`DeliveryCount`, `MessageId`,
  `SequenceNumber`, `LockToken`, `ApplicationProperties`, ...), numbers and objects as JSON text.
- Event Hubs, `cardinality: many`, `dataType: binary`: the bodies as `collection_bytes`, and the
  per-event facts as arrays in the trigger metadata (`PropertiesArray`, `SystemPropertiesArray`,
  `SequenceNumberArray`, ...) beside `PartitionContext`.
- Timers: the TimerInfo JSON (`Schedule`, `ScheduleStatus`, `IsPastDue`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from tests.host.amqp import ENQUEUED, binding_content
from tests.host.host import protos


def service_bus_invocation(
    body: bytes,
    *,
    properties: Mapping[str, Any],
    lock_token: uuid.UUID | None = None,
    content_type: str | None = "application/json",
    message_id: str = "message-1",
    delivery_count: int = 1,
    sequence_number: int = 42,
) -> tuple[dict[str, Any], dict[str, Any], uuid.UUID]:
    """(input data by binding name, trigger metadata, lock token) for the `message` binding."""
    token = lock_token or uuid.uuid4()
    content = binding_content(
        body,
        lock_token=token,
        properties=properties,
        content_type=content_type,
        message_id=message_id,
        delivery_count=delivery_count,
        sequence_number=sequence_number,
    )
    data = protos.TypedData(
        model_binding_data=protos.ModelBindingData(
            version="1.0",
            source="AzureServiceBusReceivedMessage",
            content_type="application/octet-stream",
            content=content,
        )
    )
    enqueued = ENQUEUED.isoformat().replace("+00:00", "Z")

    def as_json(value: Any) -> Any:
        return protos.TypedData(json=json.dumps(value))

    metadata = {
        "MessageId": protos.TypedData(string=message_id),
        "DeliveryCount": as_json(delivery_count),
        "SequenceNumber": as_json(sequence_number),
        "EnqueuedTimeUtc": as_json(enqueued),
        "ExpiresAtUtc": as_json((ENQUEUED + timedelta(days=14)).isoformat()),
        "LockToken": protos.TypedData(string=str(token)),
        "ApplicationProperties": as_json(dict(properties)),
        "UserProperties": as_json(dict(properties)),
        "sys": as_json(
            {"MethodName": "dataverse_queue", "UtcNow": enqueued, "RandGuid": str(uuid.uuid4())}
        ),
    }
    if content_type is not None:
        metadata["ContentType"] = protos.TypedData(string=content_type)
    return {"message": data}, metadata, token


def event_hub_invocation(
    bodies: Sequence[bytes],
    *,
    properties: Sequence[Mapping[str, Any]],
    partition: str = "0",
    first_sequence: int = 100,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input data, trigger metadata) for the `events` binding of a batch."""
    enqueued = ENQUEUED.isoformat().replace("+00:00", "Z")
    sequences = [first_sequence + index for index in range(len(bodies))]
    system = [
        {
            "SequenceNumber": sequence,
            "Offset": str(4096 * sequence),
            "PartitionKey": None,
            "EnqueuedTimeUtc": enqueued,
        }
        for sequence in sequences
    ]

    def as_json(value: Any) -> Any:
        return protos.TypedData(json=json.dumps(value))

    metadata = {
        "PartitionContext": as_json(
            {
                "FullyQualifiedNamespace": "contoso-events.servicebus.windows.net",
                "EventHubName": "dataverse-events",
                "ConsumerGroup": "$Default",
                "PartitionId": partition,
            }
        ),
        "PropertiesArray": as_json([dict(p) for p in properties]),
        "SystemPropertiesArray": as_json(system),
        "SequenceNumberArray": as_json(sequences),
        "OffsetArray": as_json([entry["Offset"] for entry in system]),
        "PartitionKeyArray": as_json([None] * len(bodies)),
        "EnqueuedTimeUtcArray": as_json([enqueued] * len(bodies)),
        "sys": as_json({"MethodName": "dataverse_event_hub", "UtcNow": enqueued}),
    }
    data = protos.TypedData(collection_bytes=protos.CollectionBytes(bytes=list(bodies)))
    return {"events": data}, metadata


def timer_invocation() -> dict[str, Any]:
    info = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": "2025-01-01T03:30:00+00:00",
            "Next": "2025-01-02T03:30:00+00:00",
            "LastUpdated": "2025-01-01T03:30:00+00:00",
        },
        "IsPastDue": False,
    }
    return {"timer": protos.TypedData(json=json.dumps(info))}
