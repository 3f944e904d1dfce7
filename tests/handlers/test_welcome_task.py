from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from handlers.welcome_task import open_welcome_task, welcome_task_id
from shared import DataverseClient, parse_context
from tests.conftest import context_bytes
from tests.dataverse_doubles import emulated_client
from tools.emulator import DataverseEmulator

ACCOUNT = UUID("acc00000-0000-4000-8000-000000000001")


@pytest.fixture
def emulator() -> DataverseEmulator:
    return DataverseEmulator()


@pytest.fixture
async def dataverse(emulator: DataverseEmulator) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator) as client:
        await client.upsert("accounts", ACCOUNT, {"name": "Northwind Traders"})
        yield client


async def test_opens_one_task_regarding_the_new_account(
    dataverse: DataverseClient, emulator: DataverseEmulator
) -> None:
    context = parse_context(context_bytes("account-create.json"))
    await open_welcome_task(context, dataverse)
    await open_welcome_task(context, dataverse)  # a duplicate delivery
    (task,) = emulator.rows("tasks")
    assert UUID(task["activityid"]) == welcome_task_id(ACCOUNT)
    assert task["subject"] == "Welcome Northwind Traders"
    assert task["_regardingobjectid_value"] == str(ACCOUNT)


def test_task_ids_are_stable_and_distinct_per_account() -> None:
    assert welcome_task_id(ACCOUNT) == welcome_task_id(ACCOUNT)
    assert welcome_task_id(ACCOUNT) != welcome_task_id(UUID(int=1))
