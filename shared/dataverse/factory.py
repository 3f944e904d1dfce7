"""Builds the process's one Dataverse client from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from shared.settings import Settings, SettingsError, make_credential

from .auth import BearerTokenAuth
from .client import DataverseClient, RequestOptions, RetryPolicy

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


def create_client(
    settings: Settings,
    *,
    credential: AsyncTokenCredential | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DataverseClient:
    """A client for `settings.dataverse_url`, authenticated with the app's credential."""
    if not settings.dataverse_url:
        raise SettingsError("DATAVERSE_URL is not set: the app cannot write back to Dataverse")
    auth = BearerTokenAuth(
        credential or make_credential(settings),
        BearerTokenAuth.scope_for(settings.dataverse_url),
    )
    return DataverseClient(
        settings.dataverse_url,
        auth=auth,
        transport=transport,
        options=RequestOptions(tag=settings.write_tag),
        retry=RetryPolicy(budget_seconds=settings.call_budget_seconds),
        max_concurrency=settings.max_concurrency,
    )
