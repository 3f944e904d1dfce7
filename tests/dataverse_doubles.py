"""Stand-ins for what tests cannot have here: an Entra token endpoint and a wall clock."""

from __future__ import annotations

from typing import Any

import httpx
from azure.core.credentials import AccessToken

from shared.dataverse import BearerTokenAuth, DataverseClient, RetryPolicy
from tools.emulator import DataverseEmulator

ENVIRONMENT = "https://contoso.crm.dynamics.com"


class TokenIssuer:
    """An `AsyncTokenCredential` that issues token-1, token-2, ... valid for `lifetime` s."""

    def __init__(self, clock: FakeTime | None = None, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        self.issued.append(f"token-{len(self.issued) + 1}")
        now = self.clock.now if self.clock else 1_700_000_000.0
        return AccessToken(self.issued[-1], int(now + self.lifetime))

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> TokenIssuer:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


class FakeTime:
    """A clock and an async sleep that advances it instantly, recording each wait."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def emulated_client(
    emulator: DataverseEmulator,
    *,
    time: FakeTime | None = None,
    budget: float = 45.0,
    max_concurrency: int = 8,
    issuer: TokenIssuer | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DataverseClient:
    time = time or FakeTime()
    auth = BearerTokenAuth(
        issuer or TokenIssuer(), BearerTokenAuth.scope_for(ENVIRONMENT), clock=time.clock
    )
    return DataverseClient(
        ENVIRONMENT,
        auth=auth,
        transport=transport or httpx.ASGITransport(app=emulator),
        retry=RetryPolicy(budget_seconds=budget),
        max_concurrency=max_concurrency,
        clock=time.clock,
        sleep=time.sleep,
        jitter=lambda low, high: high,  # deterministic: always the ceiling
    )
