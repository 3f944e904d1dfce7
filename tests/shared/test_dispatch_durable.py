"""The dispatcher over the table store on Azurite: what survives a crash and a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from azure.data.tables.aio import TableClient

from shared.dataverse import DataverseClient
from shared.dispatch import Completed, Dispatcher, Retry, Skipped
from shared.idempotency_table import TableIdempotencyStore
from shared.routing import Router
from shared.settings import Settings
from tests.conftest import context_bytes
from tests.dataverse_doubles import emulated_client
from tests.events import ORGANIZATION_ID, event
from tools.emulator import DataverseEmulator

SETTINGS = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))


@pytest.fixture
async def table_name(azurite: str) -> AsyncIterator[str]:
    name = f"durable{uuid4().hex[:12]}"
    yield name
    client = TableClient.from_connection_string(azurite, table_name=name)
    await client.delete_table()
    await client.close()


@pytest.fixture
async def dataverse() -> AsyncIterator[DataverseClient]:
    async with emulated_client(DataverseEmulator()) as client:
        yield client


def instance(azurite: str, table: str, router: Router, dataverse: DataverseClient) -> Dispatcher:
    """A fresh process: its own store object over the shared table."""
    store = TableIdempotencyStore(TableClient.from_connection_string(azurite, table_name=table))
    return Dispatcher(router, dataverse, SETTINGS, idempotency=store)


async def test_a_redelivery_after_a_crash_reruns_only_the_unfinished_handler(
    azurite: str, table_name: str, dataverse: DataverseClient
) -> None:
    runs: list[str] = []
    crash = {"second": True}
    router = Router()

    @router.on(entity="account")
    async def first(context: Any, dataverse: Any) -> None:
        runs.append("first")

    @router.on(entity="account")
    async def second(context: Any, dataverse: Any) -> None:
        runs.append("second")
        if crash.pop("second", False):
            raise RuntimeError("the instance died mid-handler")

    @router.on(entity="account")
    async def third(context: Any, dataverse: Any) -> None:
        runs.append("third")

    before = instance(azurite, table_name, router, dataverse)
    assert isinstance(await before.process(event()), Retry)
    assert runs == ["first", "second"]
    after = instance(azurite, table_name, router, dataverse)  # restarted elsewhere
    outcome = await after.process(event(message_id="redelivered"))
    assert isinstance(outcome, Completed)
    assert [name.rsplit(".", 1)[-1] for name in outcome.handlers] == ["second", "third"]
    assert runs == ["first", "second", "second", "third"]
    duplicate = await instance(azurite, table_name, router, dataverse).process(event())
    assert duplicate == Skipped("Duplicate", "every handler had already applied this event")


def row_change(row_version: int, operation: int) -> bytes:
    tree = orjson.loads(context_bytes("contact-update.json"))
    tree["OperationId"] = str(UUID(int=operation))
    tree["PostEntityImages"][0]["value"]["RowVersion"] = str(row_version)
    return orjson.dumps(tree)


async def test_a_stale_event_is_skipped(
    azurite: str, table_name: str, dataverse: DataverseClient
) -> None:
    applied: list[str] = []
    router = Router()

    @router.on(entity="contact", message="Update", ordered=True)
    async def keep_latest(context: Any, dataverse: Any) -> None:
        applied.append(context.post_entity_images["PostImage"].row_version)

    dispatcher = instance(azurite, table_name, router, dataverse)
    newer = await dispatcher.process(event(body=row_change(500, operation=2)))
    older = await dispatcher.process(event(body=row_change(400, operation=1)))
    again = await instance(azurite, table_name, router, dataverse).process(
        event(body=row_change(500, operation=2))
    )
    newest = await dispatcher.process(event(body=row_change(501, operation=3)))
    assert isinstance(newer, Completed)
    assert older == Skipped("Stale", "a newer change of the row was already applied")
    assert again == Skipped("Duplicate", "every handler had already applied this event")
    assert isinstance(newest, Completed)
    assert applied == ["500", "501"]
