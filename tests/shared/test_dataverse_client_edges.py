"""The client's edges (issue: retries that outlast their cause): a revoked application user,
a pause that queued calls must honour, a body that drips, and bodies that are not JSON."""

from __future__ import annotations

import asyncio
import time as wall
from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import orjson
import pytest

from shared.dataverse import DataverseClient, RetryPolicy
from shared.dataverse.auth import FORCED_REFRESH_INTERVAL_SECONDS
from shared.errors import DataverseError, InvalidResponse, Unauthorized
from tests.dataverse_doubles import ENVIRONMENT, FakeTime, TokenIssuer, emulated_client
from tools.emulator import DataverseEmulator


async def test_a_revoked_app_user_is_retryable_and_refreshes_at_a_bounded_rate() -> None:
    # Every call fetched a new token and a 401 dead-lettered the message: a disabled
    # application user would have dead-lettered the whole queue and hammered Entra.
    emulator = DataverseEmulator()
    time = FakeTime()
    issuer = TokenIssuer(time)
    async with emulated_client(emulator, time=time, issuer=issuer) as client:
        await client.create("accounts", {"name": "before"})
        emulator.refuse_every_token = True  # the application user is disabled
        failures = []
        for _ in range(50):
            with pytest.raises(Unauthorized) as caught:
                await client.create("accounts", {"name": "during"})
            failures.append(caught.value)
        assert issuer.issued == ["token-1", "token-2"]  # one forced refresh in 30 s, not 50
        time.now += FORCED_REFRESH_INTERVAL_SECONDS
        with pytest.raises(Unauthorized):
            await client.create("accounts", {"name": "later"})
        assert issuer.issued == ["token-1", "token-2", "token-3"]
        emulator.refuse_every_token = False  # an admin re-enabled the user
        await client.create("accounts", {"name": "after"})
    assert all(failure.retryable and failure.status == 401 for failure in failures)
    assert [row["name"] for row in emulator.rows("accounts")] == ["before", "after"]


async def test_no_request_leaves_during_a_pause_not_even_one_queued_for_a_slot() -> None:
    # 192 of 200 queued creates were sent during a 2 s pause: only calls entering the send path
    # after the 429 waited, while calls queued for a concurrency slot went as soon as one freed.
    # Real time: a fake sleep would end the pause before the queued calls ever ran.
    sent_after: list[float] = []  # when each request after the 429's answer was sent
    pause_ends: list[float] = []
    answered = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal answered
        if pause_ends:
            sent_after.append(wall.monotonic())
        first = answered == 0
        answered += 1
        await asyncio.sleep(0.002)  # latency, so calls queue for the 4 slots
        if first:
            pause_ends.append(wall.monotonic() + 1)
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {}})
        return httpx.Response(
            204, headers={"OData-EntityId": f"{ENVIRONMENT}/api/data/v9.2/accounts({uuid4()})"}
        )

    async with DataverseClient(
        ENVIRONMENT, transport=httpx.MockTransport(answer), max_concurrency=4
    ) as client:
        await asyncio.gather(*(client.create("accounts", {"name": str(n)}) for n in range(200)))
    [end] = pause_ends
    during = [at for at in sent_after if at < end]
    assert during == [], f"{len(during)} requests were sent during the pause"
    assert answered == 201
    assert len(sent_after) > 190


async def test_one_deadline_covers_the_whole_exchange_even_a_dripping_body() -> None:
    # A body dripping a byte at a time kept httpx's per-read timeout happy: 8 s ran against a
    # 2 s budget.
    async def drip() -> AsyncIterator[bytes]:
        for _ in range(40):
            await asyncio.sleep(0.1)
            yield b" "

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=drip(), headers={"Content-Type": "application/json"})

    client = DataverseClient(
        ENVIRONMENT,
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(budget_seconds=0.5, max_attempts=1),
    )
    started = wall.monotonic()
    async with client:
        with pytest.raises(DataverseError) as caught:
            await client.retrieve("accounts", uuid4())
    assert wall.monotonic() - started < 1.5
    assert caught.value.code == "NoResponse"
    assert caught.value.retryable


@pytest.mark.parametrize(
    "body", [b"<html><body>Bad gateway</body></html>", b'{"truncated": ', b"[1, 2]"]
)
async def test_a_2xx_body_that_is_not_a_json_object_is_a_classified_error(body: bytes) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "text/html"})

    async with DataverseClient(ENVIRONMENT, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(InvalidResponse) as caught:
            await client.retrieve("accounts", uuid4())
    assert caught.value.retryable
    assert caught.value.code == "InvalidResponse"
    assert f"{len(body)} bytes" in caught.value.message
    assert body.decode()[:5] not in caught.value.message  # the body itself is not echoed


async def test_a_batch_keeps_the_results_of_the_parts_it_could_read() -> None:
    boundary = "batchresponse_1"

    def part(status: int, body: bytes) -> bytes:
        return (
            (
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {status} OK\r\n"
                "Content-Type: application/json; odata.metadata=minimal\r\n\r\n"
            ).encode()
            + body
            + b"\r\n"
        )

    content = (
        part(200, orjson.dumps({"name": "A"}))
        + part(200, b"<html>oops</html>")
        + part(200, orjson.dumps({"name": "C"}))
        + f"--{boundary}--\r\n".encode()
    )

    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=content,
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    async with DataverseClient(ENVIRONMENT, transport=httpx.MockTransport(answer)) as client:
        batch = client.batch(continue_on_error=True)
        for _ in range(3):
            batch.retrieve("accounts", uuid4())
        results = await batch.send()
        assert [r.body for r in results] == [{"name": "A"}, None, {"name": "C"}]
        assert isinstance(results[1].error, InvalidResponse)
        assert results[0].error is None
        assert results[2].error is None

        async def garbage(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=b"<html/>", headers={"Content-Type": "text/html"})

    async with DataverseClient(ENVIRONMENT, transport=httpx.MockTransport(garbage)) as client:
        batch = client.batch()
        batch.retrieve("accounts", uuid4())
        with pytest.raises(InvalidResponse):
            await batch.send()


async def test_no_token_is_a_classified_retryable_error_not_a_credential_traceback() -> None:
    from tests.shared.test_health import NoToken

    async with emulated_client(DataverseEmulator(), issuer=NoToken()) as client:  # type: ignore[arg-type]
        with pytest.raises(Unauthorized) as caught:
            await client.create("accounts", {"name": "A"})
    assert caught.value.code == "TokenUnavailable"
    assert caught.value.retryable


async def test_a_next_link_outside_the_environment_is_refused_and_the_token_stays_home() -> None:
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        page = {"value": [{"name": "first"}], "@odata.nextLink": "https://elsewhere.example/x"}
        return httpx.Response(200, json=page)

    async with DataverseClient(ENVIRONMENT, transport=httpx.MockTransport(answer)) as client:
        rows = client.query("accounts", page_size=1)
        assert (await anext(rows))["name"] == "first"
        with pytest.raises(DataverseError, match="outside the environment"):
            await anext(rows)
    assert hosts == ["contoso.crm.dynamics.com"]


async def test_the_affinity_cookie_is_not_sent_back() -> None:
    """Learn, "Service protection API limits", "Remove the affinity cookie": without it each
    request may go to any web server, each with its own limits."""
    cookies: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("Cookie"))
        return httpx.Response(
            200,
            json={"value": []},
            headers={"Set-Cookie": "ARRAffinity=0123abcd; Path=/; HttpOnly; Secure"},
        )

    async with DataverseClient(ENVIRONMENT, transport=httpx.MockTransport(answer)) as client:
        for _ in range(2):
            assert [row async for row in client.query("accounts")] == []
    assert cookies == [None, None]
