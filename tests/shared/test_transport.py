"""httpx over aiohttp (shared/dataverse/transport.py) on real sockets: what each failure of the
network becomes decides whether a POST is sent again (resend.py), so each is checked here
against a raw server that fails in that one way."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from shared.dataverse import DataverseClient, RetryPolicy
from shared.dataverse.sender import USER_AGENT, Sender
from shared.dataverse.transport import AiohttpTransport
from shared.errors import DataverseError

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(answer: Serve) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server on a free loopback port that runs `answer` per connection; yields its URL and
    the request heads it received."""
    heads: list[bytes] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()


def client(url: str, attempts: int = 3) -> DataverseClient:
    return DataverseClient(
        url,
        retry=RetryPolicy(budget_seconds=3, max_attempts=attempts, backoff_base_seconds=0.01),
    )


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request and closes without a word: Dataverse may have applied it."""


async def test_a_connection_dropped_after_the_request_does_not_send_a_post_again() -> None:
    async with raw_server(hang_up) as (url, heads):
        async with client(url) as dataverse:
            with pytest.raises(DataverseError) as caught:
                await dataverse.create("accounts", {"name": "maybe applied"})
            assert caught.value.code == "NoResponse"
            assert len([head for head in heads if head.startswith(b"POST")]) == 1
            with pytest.raises(DataverseError):
                await dataverse.retrieve("accounts", "00000000-0000-0000-0000-000000000001")
        assert len([head for head in heads if head.startswith(b"GET")]) == 3  # idempotent: again


async def test_a_refused_connection_is_a_connect_error_and_even_a_post_is_resent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    transport = AiohttpTransport()
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(httpx.Request("POST", f"http://127.0.0.1:{port}/"))
    await transport.aclose()
    async with client(f"http://127.0.0.1:{port}") as dataverse:
        with pytest.raises(DataverseError) as caught:
            await dataverse.create("accounts", {"name": "never sent"})
        assert caught.value.code == "ConnectionFailed"
        assert dataverse.requests_sent == 3  # the POST could not have arrived: sent again


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with raw_server(silent) as (url, _):
        transport = AiohttpTransport()
        request = httpx.Request("GET", url, extensions={"timeout": {"read": 0.2}})
        with pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(request)
        await transport.aclose()


async def test_a_compressed_body_is_decoded_once_and_a_redirect_is_not_followed() -> None:
    body = gzip.compress(b'{"name": "zipped"}')

    async def zipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()

    async with raw_server(zipped) as (url, heads):
        async with client(url) as dataverse:
            row = await dataverse.retrieve("accounts", "00000000-0000-0000-0000-000000000001")
        assert row == {"name": "zipped"}
        head = heads[0].lower()
        assert b"authorization" not in head  # no auth configured: none invented
        assert b"odata-version: 4.0" in head  # httpx's headers cross as they are

    async def moved(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()

    async with raw_server(moved) as (url, heads):
        transport = AiohttpTransport()
        response = await transport.handle_async_request(httpx.Request("GET", url))
        await transport.aclose()
    assert response.status_code == 302
    assert len(heads) == 1


async def test_headers_and_bodies_cross_as_built_with_nothing_invented() -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with raw_server(ok) as (url, heads):
        sender = Sender(transport=AiohttpTransport())
        for method, content in (("GET", None), ("POST", None), ("PATCH", b"raw")):
            response = await sender.send(
                method, url + "/", headers=None, content=content, phase_timeout=5
            )
            assert response.status_code == 200
        await sender.aclose()

    def names(head: bytes) -> set[str]:
        return {line.split(":")[0] for line in head.decode().lower().splitlines()[1:] if line}

    ours = {"host", "accept", "accept-encoding", "odata-maxversion", "odata-version"}
    ours.add("user-agent")
    get, empty_post, untyped_patch = heads
    assert names(get) == ours  # no Content-Length or Content-Type on a GET
    assert names(empty_post) == ours | {"content-length"}  # no octet-stream invented
    assert b"Content-Length: 0" in empty_post
    assert names(untyped_patch) == ours | {"content-length"}
    assert b"Content-Length: 3" in untyped_patch
    assert f"User-Agent: {USER_AGENT}".encode() in get  # not aiohttp's own


async def test_an_uncompressed_body_is_the_content_without_a_second_pass() -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": "b"}\n')
        await writer.drain()

    async with raw_server(ok) as (url, _):
        transport = AiohttpTransport()
        response = await transport.handle_async_request(httpx.Request("GET", url))
        await transport.aclose()
    # httpx raises ResponseNotRead here unless the transport's shortcut (`_content`) holds,
    # and its read() would consume the stream if it no longer honoured it.
    assert response.content == b'{"a": "b"}\n'
    assert response.read() == b'{"a": "b"}\n'
    assert not response.is_stream_consumed
    assert response.json() == {"a": "b"}
