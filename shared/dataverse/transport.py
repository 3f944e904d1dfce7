"""httpx's transport over aiohttp: the client keeps httpx's API (auth flow, requests, responses,
the test transports) and sends through aiohttp's connection pool.

Why: httpx's own pool (httpcore, with h11) cost 1.1 ms of CPU per request on this machine,
where aiohttp, which the app already installs for azure-identity's async credentials, costs a
fraction of that (benchmarks/writeback.py (c)). On Flex Consumption CPU time is billed.

What must not change is what the resend policy (resend.py) relies on: a request that cannot
have reached Dataverse raises `httpx.ConnectError` or `httpx.ConnectTimeout` (safe to send a
POST again), while one that may have been sent raises a `ReadError`, `ReadTimeout` or
`RemoteProtocolError` (a POST is not sent again). aiohttp's exceptions are mapped here with that
line in mind: a pooled connection the server dropped after the request left is a `ReadError`,
not a connect error.
"""

from __future__ import annotations

import asyncio
from urllib.request import getproxies

import aiohttp
import httpx

# aiohttp's exceptions in the order to test them: subclasses before their bases.
_MAPPED: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # DNS, refused, TLS handshake
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.ReadError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a malformed response
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
)


def _mapped(error: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    for source, target in _MAPPED:
        if isinstance(error, source):
            return target(f"{type(error).__name__}: {error}", request=request)
    return None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, made on first use (it needs the running loop)."""

    def __init__(self, *, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ttl_dns_cache=300, keepalive_timeout=30
                ),
                # httpx decodes Content-Encoding itself, from the headers passed on.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                # The environment's proxy, read once: aiohttp's trust_env reads it (and netrc,
                # in a thread) on every request, which doubled the CPU per request.
                proxy=getproxies().get("https"),
            )
            # aiohttp sends an idempotent request once more, unseen, when a connection drops;
            # resend.py decides and counts every send (the shared budget too), so it may not.
            # No public switch exists; tests/shared/test_transport.py fails if this stops working.
            self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=timeout,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            ) as answer:
                body = await answer.read()
                reason = (answer.reason or "").encode()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            mapped = _mapped(error, request)
            if mapped is None:
                raise
            raise mapped from error
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            content=body,
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": reason,
            },
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
