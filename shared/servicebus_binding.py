"""Reads the Service Bus SDK-type binding's data as the Functions host writes it.

The host (Microsoft.Azure.WebJobs.Extensions.ServiceBus, `ConvertReceivedMessageToBindingData`)
sends each message as ModelBindingData whose content is the lock token, 16 bytes in .NET's
`Guid.ToByteArray()` order, followed by the whole AMQP message (`AmqpAnnotatedMessage.ToBytes()`:
header, annotations, properties, application properties, body). The Python extension
(azurefunctions-extensions-bindings-servicebus 1.0.0b2) instead looks for the text
`x-opt-lock-token` and decodes only what follows it, which drops the AMQP header: the message's
`delivery_count` and `time_to_live` are then None, and its sequence number and enqueued time too.
The app reads the delivery count to dead-letter on the last allowed delivery itself, so it
decodes the content by the host's layout instead. `install()` puts this decoder in the
extension's place; a layout it cannot read falls back to the extension's own decoding.
tests/host drives this through the real worker runtime with the host's exact bytes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("dataverse.servicebus")

LOCK_TOKEN_LENGTH = 16  # a GUID
_LOCK_TOKEN_KEY = b"x-opt-lock-token"

_installed = False


def decode_binding_content(content: bytes) -> Any:
    """A `uamqp.Message` from the host's content, the lock token in its delivery annotations
    (where `azure.servicebus.ServiceBusReceivedMessage.lock_token` reads it when there is no
    delivery tag). Raises ValueError when the content does not have the host's layout."""
    import uamqp  # the extension's own AMQP codec; imported here so tests can run without it

    if len(content) <= LOCK_TOKEN_LENGTH:
        raise ValueError(f"binding content of {len(content)} bytes holds no AMQP message")
    token = uuid.UUID(bytes_le=bytes(content[:LOCK_TOKEN_LENGTH]))
    try:
        message = uamqp.Message().decode_from_bytes(bytes(content[LOCK_TOKEN_LENGTH:]))
    except Exception as error:  # uamqp raises its own types, or ValueError
        raise ValueError(f"binding content is not lock token + AMQP message: {error}") from error
    message.delivery_annotations = {_LOCK_TOKEN_KEY: token}
    return message


def _with_fallback(original: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(content: bytes) -> Any:
        if not content:
            return original(content)
        try:
            return decode_binding_content(content)
        except ValueError as error:
            logger.warning("Service Bus binding data not in the host's layout (%s)", error)
            return original(content)

    decode.__wrapped__ = original  # type: ignore[attr-defined]
    return decode


def install() -> bool:
    """Use the host-layout decoder for every SDK-type Service Bus message (idempotent). False
    where the extension is not installed or no longer decodes through the function we replace
    (then nothing is changed, and tests/host says whether the delivery count still arrives)."""
    global _installed
    if _installed:
        return True
    try:
        from azurefunctions.extensions.bindings.servicebus import (
            serviceBusReceivedMessage as module,  # noqa: N813 (the extension's name)
        )
    except ImportError:
        return False
    original = getattr(module, "get_decoded_message", None)
    if original is None:
        return False
    module.get_decoded_message = _with_fallback(original)
    _installed = True
    return True
