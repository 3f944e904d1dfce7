"""Clients for the app's own storage account: a connection string locally (Azurite), the
managed identity in Azure (identity-based AzureWebJobsStorage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings, SettingsError, make_credential

if TYPE_CHECKING:
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
