"""Clients for the app's own storage account: a connection string locally (Azurite), the
managed identity in Azure (identity-based AzureWebJobsStorage)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from shared.settings import Settings, SettingsError, make_credential

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import BlobServiceClient


def _account_url(settings: Settings, service: str) -> str:
    """The identity-based endpoint of `service` (blob, table), or an error naming both ways to
    configure storage when neither is set."""
    if not settings.storage_account_name:
        raise SettingsError(
            "no storage account: set AzureWebJobsStorage (a connection string) or, "
            "identity-based, AzureWebJobsStorage__accountName"
        )
    return f"https://{settings.storage_account_name}.{service}.core.windows.net"


def blob_service(settings: Settings) -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string)
    return BlobServiceClient(_account_url(settings, "blob"), credential=make_credential(settings))


def table_client(settings: Settings, table_name: str) -> TableClient:
    from azure.data.tables.aio import TableClient

    if settings.storage_connection_string:
        return TableClient.from_connection_string(
            settings.storage_connection_string, table_name=table_name
        )
    return TableClient(
        _account_url(settings, "table"),
        table_name=table_name,
        credential=make_credential(settings),
    )


class CreateOnce:
    """Creates a table or container the first time this process needs it. The infrastructure
    has usually made it already, so "already exists" is success, and so is a 403: the Bicep
    grants the table role on the one table it creates, a scope that may not create tables (if
    the table were really missing, the first read or write says so). The lock turns the
    concurrent first calls of a cold start into one request."""

    def __init__(self, create: Callable[[], Awaitable[object]]) -> None:
        self._create = create
        self._done = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        if self._done:
            return
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        async with self._lock:
            if not self._done:  # another task may have created it while this one waited
                try:
                    await self._create()
                except ResourceExistsError:
                    pass
                except HttpResponseError as error:
                    if error.status_code != 403:
                        raise
                self._done = True
