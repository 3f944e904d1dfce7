"""Shared by the emulator's tests: plain HTTP against the emulator, mounted in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tools.emulator import API_PREFIX, DataverseEmulator

Http = tuple[httpx.AsyncClient, DataverseEmulator]


def web_api(emulator: DataverseEmulator, token: str = "anything") -> httpx.AsyncClient:
    """An HTTP client for the emulator's Web API, with a bearer token."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator),
        base_url="https://contoso.crm.dynamics.com" + API_PREFIX,
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    emulator = DataverseEmulator()
    async with web_api(emulator) as client:
        yield client, emulator
