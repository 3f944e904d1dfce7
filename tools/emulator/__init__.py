"""A Dataverse Web API emulator (ASGI), for tests, the embedded demo and local development."""

from collections.abc import Generator

import httpx

from tools.emulator.app import API_PREFIX, DataverseEmulator, RecordedRequest
from tools.emulator.store import DEFAULT_TABLES, Table


class AnyToken(httpx.Auth):
    """A bearer token for the emulator, which accepts any (tests of token handling itself use
    `shared.dataverse.BearerTokenAuth` with a stand-in credential instead)."""

    def __init__(self, token: str = "emulator") -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


__all__ = [
    "API_PREFIX",
    "DEFAULT_TABLES",
    "AnyToken",
    "DataverseEmulator",
    "RecordedRequest",
    "Table",
]
