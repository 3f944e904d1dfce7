"""A Service Bus message as the Functions host hands it to the SDK-type binding.

The content of the ModelBindingData is the lock token as `Guid.ToByteArray()` (16 bytes; equal
to Python's `UUID.bytes_le`) followed by the AMQP-encoded message, as the host's
`ServiceBusExtensionConfigProvider.ConvertReceivedMessageToBindingData` writes it. The message
carries what the broker sets on a peek-locked delivery: the header (delivery count, TTL) and the
message annotations `x-opt-enqueued-time`, `x-opt-sequence-number`, `x-opt-locked-until` and
`x-opt-lock-token` (the text the Python extension searches for).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import uamqp
from uamqp import types as amqp_types

ENQUEUED = datetime(2025, 1, 1, tzinfo=UTC)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def amqp_message_bytes(
    body: bytes,
    *,
    properties: Mapping[str, Any],
    lock_token: uuid.UUID,
    content_type: str | None = "application/json",
    message_id: str = "message-1",
    delivery_count: int = 1,
    sequence_number: int = 42,
    time_to_live_ms: int = 14 * 24 * 3600 * 1000,
    enqueued: datetime = ENQUEUED,
    lock_duration: timedelta = timedelta(minutes=5),
) -> bytes:
    """The AMQP message of a peek-locked delivery, encoded."""
    header = uamqp.message.MessageHeader()
    header.delivery_count = delivery_count
    header.time_to_live = time_to_live_ms
    header.durable = True
    message = uamqp.Message(
        body,
        properties=uamqp.message.MessageProperties(
            message_id=message_id, content_type=content_type
        ),
        application_properties=dict(properties),
        header=header,
        annotations={
            amqp_types.AMQPSymbol("x-opt-enqueued-time"): _millis(enqueued),
            amqp_types.AMQPSymbol("x-opt-sequence-number"): amqp_types.AMQPLong(sequence_number),
            amqp_types.AMQPSymbol("x-opt-locked-until"): _millis(enqueued + lock_duration),
            amqp_types.AMQPSymbol("x-opt-lock-token"): lock_token,
        },
    )
    encoded: bytes = message.encode_message()
    return encoded


def binding_content(body: bytes, *, lock_token: uuid.UUID, **message: Any) -> bytes:
    """ModelBindingData.content: `Guid.ToByteArray()` (== UUID.bytes_le), then the message."""
    return lock_token.bytes_le + amqp_message_bytes(body, lock_token=lock_token, **message)
