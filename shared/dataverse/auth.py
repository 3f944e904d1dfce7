"""Bearer tokens for the Web API from any `azure.identity.aio` credential.

Tokens are cached per process and refreshed ahead of expiry, so requests rarely wait on the
identity endpoint; a 401 refreshes once and replays the request (the token may have been
revoked or the clock skewed), at most once per `FORCED_REFRESH_INTERVAL_SECONDS` for the whole
process: a disabled application user answers 401 to every call, and fetching a token per call
would hammer the identity endpoint without changing the answer. Tokens never reach logs or
exception messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import httpx

from shared.errors import Unauthorized

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

# Refresh this long before expiry: managed identity tokens live for hours, a call for seconds.
REFRESH_MARGIN_SECONDS = 300.0
# A 401 forces a new token at most this often per process.
FORCED_REFRESH_INTERVAL_SECONDS = 30.0


class BearerTokenAuth(httpx.Auth):
    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._forced_at = -FORCED_REFRESH_INTERVAL_SECONDS
        self._lock = asyncio.Lock()
        self.refreshes = 0  # how many tokens were fetched: for tests and diagnostics

    @staticmethod
    def scope_for(environment_url: str) -> str:
        """`https://contoso.crm.dynamics.com` -> `https://contoso.crm.dynamics.com/.default`."""
        return environment_url.rstrip("/") + "/.default"

    async def _bearer(self, *, force: bool = False, rejected: str | None = None) -> str:
        if not force and (token := self._fresh_token(self._clock())) is not None:
            return token  # no lock on the path of every request
        async with self._lock:
            # Another request may have refreshed while this one waited for the lock.
            now = self._clock()
            stale = self._fresh_token(now) is None
            forced = (
                force
                and self._token == rejected
                and now - self._forced_at >= FORCED_REFRESH_INTERVAL_SECONDS
            )
            if forced:
                self._forced_at = now
            if stale or forced:
                try:
                    access = await self._credential.get_token(self._scope)
                except Exception as error:
                    # No managed identity, an expired login, Entra unreachable: a classified,
                    # retryable error (the health check's `authentication`, a Retry for an
                    # event), not a traceback from inside httpx.
                    raise Unauthorized(
                        None,
                        "TokenUnavailable",
                        f"could not get a token for Dataverse ({type(error).__name__}): check "
                        "the managed identity (AZURE_CLIENT_ID) in Azure, or your Azure login",
                        retryable=True,
                    ) from None
                self._token = access.token
                self._expires_on = float(access.expires_on)
                self.refreshes += 1
            assert self._token is not None
            return self._token

    def current_header(self) -> str | None:
        """`Authorization` while the cached token is fresh, else None: the Sender's path for
        almost every request, without the auth flow's generator (it still runs on a 401)."""
        token = self._fresh_token(self._clock())
        return None if token is None else f"Bearer {token}"

    def _fresh_token(self, now: float) -> str | None:
        """The cached token unless it is missing or inside the refresh margin."""
        if now > self._expires_on - REFRESH_MARGIN_SECONDS:
            return None
        return self._token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._bearer()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self._bearer(force=True, rejected=token)
            if fresh != token:  # replay only with another token: the same one gets 401 again
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(url: str) -> bool:
    """A Dataverse URL on this machine: the emulator (tools.emulator), never an environment."""
    return httpx.URL(url).host in LOOPBACK_HOSTS


class EmulatorCredential:
    """The credential for an emulator on loopback, which takes any bearer token: no Azure login
    is needed to run the app against it. Chosen only outside Azure (shared.settings)."""

    TOKEN = "emulator"

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(self.TOKEN, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> EmulatorCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None
