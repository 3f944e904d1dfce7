"""Clients for the app's own storage account: a connection string locally (Azurite), the
managed identity in Azure (identity-based AzureWebJobsStorage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings, SettingsError, make_credential

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import BlobServiceClient


def blob_service(settings: Settings) -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string)
    if settings.storage_account_name:
        return BlobServiceClient(
            f"https://{settings.storage_account_name}.blob.core.windows.net",
            credential=make_credential(settings),
        )
    raise SettingsError(
        "no storage account: set AzureWebJobsStorage (a connection string) or, identity-based, "
        "AzureWebJobsStorage__accountName"
    )


def table_client(settings: Settings, table_name: str) -> TableClient:
    from azure.data.tables.aio import TableClient

    if settings.storage_connection_string:
        return TableClient.from_connection_string(
            settings.storage_connection_string, table_name=table_name
        )
    if settings.storage_account_name:
        return TableClient(
            f"https://{settings.storage_account_name}.table.core.windows.net",
            table_name=table_name,
            credential=make_credential(settings),
        )
    raise SettingsError(
        "no storage account: set AzureWebJobsStorage (a connection string) or, identity-based, "
        "AzureWebJobsStorage__accountName"
    )
