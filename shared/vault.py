"""Key Vault secrets through its REST API (api-version 7.4) with an Entra token: the send key
tools.endpoints gives Dataverse, and its expiry for the health checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential

from shared.registration import SpecError


def secret_url(reference: str) -> str:
    """`<vault>/<secret>` is a vault of Azure's public cloud; a URL is taken as it is
    (`https://<vault>.vault.usgovcloudapi.net/secrets/<secret>`, with or without a version)."""
    if "://" in reference:
        return reference.rstrip("/")
    vault, _, secret = reference.partition("/")
    return f"https://{vault}.vault.azure.net/secrets/{secret}"


def vault_scope(url: str) -> str:
    """The token scope of the vault's cloud: `<vault>.vault.azure.net` -> `vault.azure.net`."""
    host = urlsplit(url).hostname or ""
    return f"https://{host.partition('.')[2]}/.default"


async def read_vault_secret(
    url: str,
    credential: AsyncTokenCredential,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """A secret's current value through Key Vault's REST API (GET secret, 7.4)."""
    value = (await _get_secret(url, credential, transport)).get("value")
    if value is None:
        raise SpecError(f"Key Vault sent no secret value for {url}")
    if not isinstance(value, str) or not value:
        raise SpecError(f"the secret at {url} is empty")
    return value


async def _get_secret(
    url: str, credential: AsyncTokenCredential, transport: httpx.AsyncBaseTransport | None
) -> dict[str, Any]:
    token = await credential.get_token(vault_scope(url))
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get(
            url,
            params={"api-version": "7.4"},
            headers={"Authorization": f"Bearer {token.token}"},
        )
    if response.status_code != 200:
        # 401/403: the caller lacks "Key Vault Secrets User" on the vault; 404: no such secret.
        raise SpecError(f"Key Vault answered {response.status_code} for {url}")
    try:
        found = response.json()
    except ValueError:
        raise SpecError(f"Key Vault sent no secret value for {url}") from None
    if not isinstance(found, dict):
        raise SpecError(f"Key Vault sent no secret value for {url}")
    return found


async def read_secret_expiry(
    url: str,
    credential: AsyncTokenCredential,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> datetime | None:
    """When the secret's current version expires (`attributes.exp`), or None if it never does."""
    found = await _get_secret(url, credential, transport)
    expires = (found.get("attributes") or {}).get("exp")
    return None if expires is None else datetime.fromtimestamp(float(expires), UTC)
