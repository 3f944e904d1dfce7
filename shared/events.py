"""`DataverseEvent`: one posted context plus what the transport knows about it.

The dispatcher works on this envelope only, never on Service Bus or Event Hubs types, so one
pipeline serves every trigger. It carries the raw body (to park or dead-letter it unchanged),
the transport's identifiers and the claims Dataverse adds as message properties. The claims are
readable without decoding the body, which is how a foreign or malformed message is recognised
cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.context import RemoteExecutionContext, parse_context, parse_flow_row
from shared.errors import InvalidMessage
from shared.lazy import cached

_CLAIMS = "http://schemas.microsoft.com/xrm/2011/claims/"
TRUNCATED_PROPERTY = "messagemaxsizeexceeded"


@dataclass(frozen=True, slots=True)
class DataverseClaims:
    """The property bag Dataverse adds to every message it posts (ClaimTypes constants).
    Its presence is how a listener tells a Dataverse message from anything else."""

    organization: str | None = None
    user: str | None = None
    initiating_user: str | None = None
    entity_logical_name: str | None = None
    request_name: str | None = None
    initiating_user_agent: str | None = None

    @property
    def present(self) -> bool:
        return self.organization is not None or self.request_name is not None


@dataclass(frozen=True)
class DataverseEvent:
    body: bytes
    content_type: str | None = None
    message_id: str | None = None
    delivery_count: int | None = None
    enqueued_time: datetime | None = None
    # Application properties with keys as sent (decoded to str); see `get_property()` for lookups.
    properties: Mapping[str, Any] = field(default_factory=dict)
    transport: str = "unknown"
    # Where the event sits in its stream: Service Bus sequence number, Event Hubs partition/offset.
    position: str | None = None
    partition_key: str | None = None

    @cached
    def _folded(self) -> dict[str, Any]:
        return {key.lower(): item for key, item in self.properties.items()}

    def get_property(self, name: str) -> Any:
        """An application property by name in any letter case (senders and SDKs differ)."""
        return self._folded.get(name.lower())

    @cached
    def claims(self) -> DataverseClaims:
        def claim(name: str) -> str | None:
            found = self._folded.get(_CLAIMS + name)
            return None if found is None else str(found)

        return DataverseClaims(
            organization=claim("organization"),
            user=claim("user"),
            initiating_user=claim("initiatinguser"),
            entity_logical_name=claim("entitylogicalname"),
            request_name=claim("requestname"),
            initiating_user_agent=claim("initiatinguseragent"),
        )

    @property
    def truncated(self) -> bool:
        """Dataverse dropped InputParameters, images and ParentContext to fit the 192 KB limit:
        `context.target` is None and handlers must re-read the row."""
        return TRUNCATED_PROPERTY in self._folded

    @cached
    def context(self) -> RemoteExecutionContext:
        """The decoded body; raises `InvalidMessage` if it is not a readable context. A body
        that is not a context may be a Power Automate flow's row (shared/context/flow.py):
        tried only then, so a service endpoint's context costs nothing more."""
        try:
            return parse_context(self.body, self.content_type)
        except InvalidMessage as error:
            if error.reason != "NotAnExecutionContext":
                raise
            found = parse_flow_row(self.body, self._folded)
            if found is None:
                raise
            return found

    # --- builders from transport messages ------------------------------------------------------

    @classmethod
    def from_service_bus(cls, message: Any) -> DataverseEvent:
        """From `azure.servicebus.ServiceBusReceivedMessage` (the SDK-type binding) or
        `azure.functions.ServiceBusMessage` (the classic binding)."""
        properties = getattr(message, "application_properties", None) or getattr(
            message, "user_properties", None
        )
        sequence = getattr(message, "sequence_number", None)
        return cls(
            body=_body_of(message),
            content_type=_text(getattr(message, "content_type", None)),
            message_id=_text(getattr(message, "message_id", None)),
            delivery_count=getattr(message, "delivery_count", None),
            enqueued_time=getattr(message, "enqueued_time_utc", None),
            properties=normalise_properties(properties),
            transport="servicebus",
            position=None if sequence is None else str(sequence),
        )

    @classmethod
    def from_event_hub(
        cls, event: Any, properties: Mapping[Any, Any] | None = None
    ) -> DataverseEvent:
        """From `azure.functions.EventHubEvent` (whose application properties arrive in the
        trigger metadata, so the trigger passes them) or the SDK's `EventData`."""
        if properties is None:
            properties = getattr(event, "properties", None)
        partition = getattr(event, "partition_key", None)
        sequence = getattr(event, "sequence_number", None)
        offset = getattr(event, "offset", None)
        return cls(
            body=_body_of(event),
            content_type=_text(getattr(event, "content_type", None)),
            message_id=_text(getattr(event, "message_id", None)),
            delivery_count=None,
            enqueued_time=getattr(event, "enqueued_time", None),
            properties=normalise_properties(properties),
            transport="eventhub",
            position=None if sequence is None else f"{sequence}@{offset}",
            partition_key=_text(partition),
        )


def normalise_properties(properties: Mapping[Any, Any] | None) -> dict[str, Any]:
    """Keys and text values as `str`: the SDK-type binding hands them over as bytes."""
    if not properties:
        return {}
    result: dict[str, Any] = {}
    for key, item in properties.items():
        result[_text(key) or ""] = _text(item) if isinstance(item, bytes | bytearray) else item
    return result


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).decode("utf-8", errors="replace")
    return str(raw)


def _body_of(message: Any) -> bytes:
    get_body = getattr(message, "get_body", None)
    body = get_body() if callable(get_body) else getattr(message, "body", b"")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Iterable):  # the Service Bus SDK yields the AMQP data sections
        return b"".join(bytes(section) for section in body)
    raise TypeError(f"cannot read a message body of type {type(body).__name__}")
