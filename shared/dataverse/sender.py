"""One HTTP exchange with the Web API: httpx's requests, responses, auth flow and transports,
without `httpx.AsyncClient` around them.

Why not the client: per request it parses the URL again and merges it with the base URL,
merges three header sets, runs cookie, event-hook and redirect machinery the Web API never
needs, and wraps the response's stream once more. Measured, that was a third of our CPU per
request, and CPU is what Flex Consumption bills (benchmarks/writeback.py (c)). What a caller
of `Sender` keeps is what the client gave: `httpx.Request` and `httpx.Response`, any
`httpx.Auth` (the bearer token's flow, with its replay on 401) and any httpx transport (aiohttp's
pool in production, the emulator's ASGI app or a mock in tests).

No cookies are kept: Dataverse's affinity cookie pins a client to one web server, and Learn
("Service protection API limits", "Remove the affinity cookie") advises dropping it so that
requests spread over the servers, each with its own limits. No redirect is followed: the Web
API does not redirect, and following one would send the bearer token elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

# Parsed URLs and header sets kept for reuse: entity sets, actions and options repeat; row
# addresses and ETags mostly do not, so each cache starts afresh when full.
_CACHE_SIZE = 512

# Who is calling, in Dataverse's audit and the plug-in context (InitiatingUserAgent).
USER_AGENT = "dataverse-event-consumers"

BASE_HEADERS: dict[str, str] = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "User-Agent": USER_AGENT,
}


class Sender:
    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport,
        auth: httpx.Auth | None = None,
    ) -> None:
        self._transport = transport
        self._auth = auth
        # BearerTokenAuth's synchronous look at its cached token (auth.py); other auths run
        # their flow on every request.
        self._current_header: Callable[[], str | None] | None = getattr(
            auth, "current_header", None
        )
        self._urls: dict[str, httpx.URL] = {}
        self._headers: dict[tuple[bytes, tuple[tuple[str, str], ...]], httpx.Headers] = {}

    def url(self, text: str) -> httpx.URL:
        """`text` parsed once; a full, absolute URL."""
        found = self._urls.get(text)
        if found is None:
            found = httpx.URL(text)
            if not found.is_absolute_url:
                raise ValueError("a Web API URL must be absolute")
            if len(self._urls) >= _CACHE_SIZE:
                self._urls.clear()
            self._urls[text] = found
        return found

    def _headers_for(self, url: httpx.URL, headers: Mapping[str, str] | None) -> httpx.Headers:
        """The base headers, `Host` and the call's, built once per set: httpx copies a
        `Headers` cheaply but normalises every other kind afresh. Content-Length is the
        transport's to set (aiohttp does; the ASGI transport needs none)."""
        key = (url.netloc, tuple(headers.items()) if headers else ())
        found = self._headers.get(key)
        if found is None:
            found = httpx.Headers([("Host", url.netloc.decode("ascii")), *BASE_HEADERS.items()])
            found.update(key[1])
            if len(self._headers) >= _CACHE_SIZE:
                self._headers.clear()
            self._headers[key] = found
        return found

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        phase_timeout: float,
    ) -> httpx.Response:
        """Send once (twice when the auth flow replays a 401 with a fresh token); the response
        is read whole. `phase_timeout` bounds each phase (connect, write, each read); the
        caller bounds the whole exchange."""
        parsed = self.url(url)
        request = httpx.Request(
            method,
            parsed,
            headers=self._headers_for(parsed, headers),
            stream=httpx.ByteStream(content or b""),
            extensions={
                "timeout": {
                    "connect": phase_timeout,
                    "read": phase_timeout,
                    "write": phase_timeout,
                    "pool": phase_timeout,
                }
            },
        )
        request.read()  # makes `request.content` readable, as httpx's own requests are
        if self._auth is None:
            return await self._exchange(request)
        response = None
        if self._current_header is not None and (header := self._current_header()):
            request.headers["Authorization"] = header
            response = await self._exchange(request)
            if response.status_code != 401:
                return response
        flow = self._auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            if response is not None:  # the 401 the fresh token got: the flow takes it from here
                try:
                    request = await flow.asend(response)
                except StopAsyncIteration:
                    return response  # no other token to replay with
            while True:
                response = await self._exchange(request)
                try:
                    request = await flow.asend(response)
                except StopAsyncIteration:
                    return response
        finally:
            await flow.aclose()

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        if isinstance(response.stream, httpx.ByteStream):
            response.read()  # in memory already (aiohttp's): the sync path is the cheaper
        else:
            try:  # a transport that streams (the ASGI one, in tests)
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
