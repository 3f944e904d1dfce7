"""The blob poison store against Azurite: what is parked comes back byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from azure.storage.blob.aio import BlobServiceClient

from shared.events import DataverseEvent
from shared.poison import BlobPoisonStore
from tests.conftest import context_bytes
from tests.events import claims


@pytest.fixture
async def store(azurite: str) -> AsyncIterator[BlobPoisonStore]:
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client(f"poison-{uuid4().hex[:12]}")
    store = BlobPoisonStore(container)
    yield store
    await container.delete_container()
    await service.close()


def binary_event(sequence: int) -> DataverseEvent:
    return DataverseEvent(
        body=context_bytes("account-create.msbin1"),
        content_type="application/msbin1",
        message_id=f"m-{sequence}",
        properties=claims(),
        transport="eventhub",
        position=f"{sequence}@{sequence * 100}",
    )


async def test_parked_events_keep_their_exact_bytes_and_properties(store: BlobPoisonStore) -> None:
    name = await store.park(binary_event(5), "InvalidBinaryXml", "register as JSON", "3")
    assert name == "eventhub/3/5@500.json"
    parked = await store.get(name)
    assert parked.body == context_bytes("account-create.msbin1")
    assert parked.content_type == "application/msbin1"
    assert parked.properties == claims()
    assert (parked.reason, parked.description, parked.partition) == (
        "InvalidBinaryXml",
        "register as JSON",
        "3",
    )


async def test_parking_the_same_event_twice_keeps_one_copy(store: BlobPoisonStore) -> None:
    await store.park(binary_event(7), "First", "first try", "0")
    await store.park(binary_event(7), "RetriesExhausted", "second try", "0")
    await store.park(binary_event(8), "Other", "another event", "0")
    assert await store.list() == ["eventhub/0/7@700.json", "eventhub/0/8@800.json"]
    assert (await store.get("eventhub/0/7@700.json")).reason == "RetriesExhausted"
    await store.remove("eventhub/0/8@800.json")
    assert await store.list() == ["eventhub/0/7@700.json"]
