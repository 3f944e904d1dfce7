"""Builds the process's one Dataverse client from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from shared.settings import Settings, SettingsError, make_credential

from .auth import BearerTokenAuth
from .budget import SharedBudget, TableRing
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
        budget=shared_budget(settings),
        auth=auth,
        transport=transport,
        options=RequestOptions(tag=settings.write_tag),
        retry=RetryPolicy(budget_seconds=settings.call_budget_seconds),
        max_concurrency=settings.max_concurrency,
    )


def shared_budget(settings: Settings) -> SharedBudget | None:
    """The fleet's request count in the idempotency table, keyed by the environment's host
    (every instance writes to it as the one app user); None in memory or when turned off."""
    if settings.request_budget <= 0 or settings.idempotency_store != "table":
        return None
    from urllib.parse import urlsplit

    from shared.storage import table_client

    host = urlsplit(settings.dataverse_url or "").hostname or "dataverse"
    ring = TableRing(table_client(settings, settings.idempotency_table), host)
    return SharedBudget(ring, requests=settings.request_budget)
