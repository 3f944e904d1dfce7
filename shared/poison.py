"""The poison store: where Event Hubs events that cannot be processed are parked.

Event Hubs has no dead-letter queue, and the Functions host advances the checkpoint whether or
not the function succeeded, so an event that is not parked is lost. A parked event keeps its
exact body bytes (binary formats survive), content type, application properties and the reason,
so it can be inspected and resubmitted unchanged. Names are derived from the event's place in
its stream, so parking the same event again (a retried batch) overwrites instead of
duplicating.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from shared.events import DataverseEvent
from shared.storage import CreateOnce

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

DEFAULT_CONTAINER = "dataverse-poison"


@dataclass(frozen=True)
class ParkedEvent:
    name: str
    body: bytes
    content_type: str | None
    properties: dict[str, Any]
    message_id: str | None
    transport: str
    position: str | None
    partition: str | None
    reason: str
    description: str
    parked_at: str

    def to_json(self) -> bytes:
        document = {
            "name": self.name,
            "body_base64": base64.b64encode(self.body).decode(),
            "content_type": self.content_type,
            "properties": self.properties,
            "message_id": self.message_id,
            "transport": self.transport,
            "position": self.position,
            "partition": self.partition,
            "reason": self.reason,
            "description": self.description,
            "parked_at": self.parked_at,
        }
        return orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> ParkedEvent:
        document = orjson.loads(data)
        body = base64.b64decode(document.pop("body_base64"))
        return cls(body=body, **document)


def parked_name(event: DataverseEvent, partition: str | None) -> str:
    """`eventhub/<partition>/<sequence>@<offset>`, or the body's hash when the position is
    unknown: the same event always gets the same name."""
    if event.position:
        place = event.position.replace("/", "_")
    else:
        place = "sha256-" + hashlib.sha256(event.body).hexdigest()[:32]
    return f"{event.transport}/{partition or 'unknown'}/{place}.json"


def park_record(
    event: DataverseEvent, reason: str, description: str, partition: str | None
) -> ParkedEvent:
    return ParkedEvent(
        name=parked_name(event, partition),
        body=event.body,
        content_type=event.content_type,
        properties=dict(event.properties),
        message_id=event.message_id,
        transport=event.transport,
        position=event.position,
        partition=partition,
        reason=reason,
        description=description,
        parked_at=datetime.now(UTC).isoformat(),
    )


class PoisonStore(Protocol):
    async def park(
        self, event: DataverseEvent, reason: str, description: str, partition: str | None
    ) -> str: ...

    async def list(self) -> list[str]: ...

    async def get(self, name: str) -> ParkedEvent: ...

    async def remove(self, name: str) -> None: ...


class InMemoryPoisonStore:
    """For tests and the embedded demo."""

    def __init__(self) -> None:
        self.parked: dict[str, ParkedEvent] = {}

    async def park(
        self, event: DataverseEvent, reason: str, description: str, partition: str | None
    ) -> str:
        record = park_record(event, reason, description, partition)
        self.parked[record.name] = record
        return record.name

    async def list(self) -> list[str]:
        return sorted(self.parked)

    async def get(self, name: str) -> ParkedEvent:
        return self.parked[name]

    async def remove(self, name: str) -> None:
        self.parked.pop(name, None)


class BlobPoisonStore:
    """A blob container in the app's storage account (Azurite locally): one JSON blob per
    parked event, with the reason also in the blob's metadata for listing tools."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container
        self._ensure_container = CreateOnce(container.create_container)

    async def park(
        self, event: DataverseEvent, reason: str, description: str, partition: str | None
    ) -> str:
        await self._ensure_container()
        record = park_record(event, reason, description, partition)
        await self._container.upload_blob(
            record.name,
            record.to_json(),
            overwrite=True,
            metadata={"reason": reason[:256]},
            content_settings=_json_content(),
        )
        return record.name

    async def list(self) -> list[str]:
        await self._ensure_container()
        return sorted([blob.name async for blob in self._container.list_blobs()])

    async def get(self, name: str) -> ParkedEvent:
        download = await self._container.download_blob(name)
        return ParkedEvent.from_json(await download.readall())

    async def remove(self, name: str) -> None:
        await self._container.delete_blob(name)

    async def close(self) -> None:
        await self._container.close()


def _json_content() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")
