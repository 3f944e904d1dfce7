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
import functools
from urllib.request import getproxies

import aiohttp
import httpx
from multidict import CIMultiDict

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


_NO_TYPE = ("Content-Type",)


@functools.lru_cache(maxsize=64)
def _timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    """One (immutable) ClientTimeout per distinct setting: most calls share the default."""
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


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
        phases = request.extensions.get("timeout", {})
        timeout = _timeout(phases.get("pool"), phases.get("connect"), phases.get("read"))
        content = request.content
        # aiohttp's own multidict (it would build one from any other kind), decoded as HTTP
        # decodes headers (ISO-8859-1 where not ASCII, RFC 9110 5.5).
        headers = CIMultiDict(
            [(key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw]
        )
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=headers,
                # None, not b"": aiohttp then adds no Content-Type, and still sends
                # Content-Length: 0 for a POST, PATCH or DELETE.
                data=content or None,
                allow_redirects=False,
                timeout=timeout,
                # The Sender sends Accept, Accept-Encoding and User-Agent itself, so aiohttp's
                # defaults never apply; only a POST, PUT or PATCH without a Content-Type would
                # get one invented (application/octet-stream).
                skip_auto_headers=None if "Content-Type" in headers else _NO_TYPE,
            ) as answer:
                body = await answer.read()
                reason = (answer.reason or "").encode()
                compressed = "Content-Encoding" in answer.headers
        except asyncio.CancelledError:
            raise
        except Exception as error:
            mapped = _mapped(error, request)
            if mapped is None:
                raise
            raise mapped from error
        response = httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": reason,
            },
        )
        # Read as ISO-8859-1, which reads ASCII (all Dataverse sends) as ASCII: left unset,
        # httpx first decodes every header as ASCII, then as UTF-8, on the first lookup.
        response.headers.encoding = "iso-8859-1"
        if not compressed:
            # The body as it came is the content: httpx's read() would pass it through its
            # decoder, chunker and three context managers to the same bytes, 5-10% of our CPU
            # per request (benchmarks/writeback.py (c)). `read()` returns `_content` once set;
            # tests/shared/test_transport.py fails if that stops holding. A compressed body
            # is left to httpx's decoders.
            response._content = body
        return response

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
