"""Clients for the app's own storage account: a connection string locally (Azurite), the
managed identity in Azure (identity-based AzureWebJobsStorage)."""

from __future__ import annotations

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
