"""Objects built the way the Functions host builds them: the host's data shapes fed to the real
converters of `azure.functions`, so tests see exactly what a trigger function receives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter


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
        "DeliveryCount": meta.Datum(delivery_count, "int"),
        "SequenceNumber": meta.Datum(sequence_number, "int"),
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
