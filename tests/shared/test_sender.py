"""The sender (shared/dataverse/sender.py): httpx's requests, auth flow and transports without
`httpx.AsyncClient`. What the client gave and callers rely on must hold here too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import httpx
import pytest

from shared.dataverse.sender import USER_AGENT, Sender

API = "https://contoso.crm.dynamics.com/api/data/v9.2/"


class Token(httpx.Auth):
    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.tokens[0]}"
        response = yield request
        if response.status_code == 401 and len(self.tokens) > 1:
            self.tokens.pop(0)
            request.headers["Authorization"] = f"Bearer {self.tokens[0]}"
            yield request


def recording(
    seen: list[httpx.Request], answer: httpx.Response | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer or httpx.Response(204)

    return httpx.MockTransport(handler)


async def test_the_base_headers_host_and_body_go_with_each_request() -> None:
    seen: list[httpx.Request] = []
    sender = Sender(transport=recording(seen), auth=Token("t"))
    await sender.send(
        "POST",
        API + "accounts?tag=x",
        headers={"Content-Type": "application/json"},
        content=b'{"name":"a"}',
        phase_timeout=5.0,
    )
    (request,) = seen
    assert request.url == httpx.URL(API + "accounts?tag=x")
    assert request.content == b'{"name":"a"}'
    assert request.headers["Host"] == "contoso.crm.dynamics.com"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["OData-Version"] == "4.0"
    assert request.headers["Accept-Encoding"] == "gzip, deflate"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer t"
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


async def test_a_token_set_on_one_request_never_reaches_the_reused_headers() -> None:
    # The header sets are built once and reused: one request's Authorization (set by the auth
    # flow on its own copy) must not ride along on the next, sent without that auth.
    seen: list[httpx.Request] = []
    with_token = Sender(transport=recording(seen), auth=Token("secret"))
    without = Sender(transport=recording(seen))
    without._headers = with_token._headers  # one cache, as if shared, to make a leak visible
    for sender in (with_token, without):
        await sender.send("GET", API + "accounts", headers=None, content=None, phase_timeout=5)
    assert seen[0].headers["Authorization"] == "Bearer secret"
    assert "Authorization" not in seen[1].headers


async def test_a_401_is_replayed_once_with_the_fresh_token_the_flow_gives() -> None:
    answers = iter([httpx.Response(401), httpx.Response(204)])
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["Authorization"])
        return next(answers)

    sender = Sender(transport=httpx.MockTransport(handler), auth=Token("old", "new"))
    response = await sender.send(
        "DELETE", API + "accounts(1)", headers=None, content=None, phase_timeout=5
    )
    assert response.status_code == 204
    assert tokens == ["Bearer old", "Bearer new"]


async def test_a_redirect_is_answered_not_followed() -> None:
    # Following it would send the bearer token to wherever Location points.
    seen: list[httpx.Request] = []
    moved = httpx.Response(302, headers={"Location": "https://elsewhere.example/"})
    sender = Sender(transport=recording(seen, moved), auth=Token("t"))
    response = await sender.send(
        "GET", API + "accounts", headers=None, content=None, phase_timeout=5
    )
    assert response.status_code == 302
    assert [str(request.url) for request in seen] == [API + "accounts"]


async def test_a_streamed_response_is_read_whole_and_closed() -> None:
    closed: list[bool] = []

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in (b'{"value"', b": []}"):
                yield chunk

        async def aclose(self) -> None:
            closed.append(True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks())

    sender = Sender(transport=httpx.MockTransport(handler))
    response = await sender.send(
        "GET", API + "accounts", headers=None, content=None, phase_timeout=5
    )
    assert response.json() == {"value": []}
    assert closed == [True]


async def test_parsed_urls_and_header_sets_are_kept_within_a_bound() -> None:
    seen: list[httpx.Request] = []
    sender = Sender(transport=recording(seen))
    for n in range(1200):
        await sender.send(
            "PATCH",
            API + f"accounts({n})",
            headers={"If-Match": f'W/"{n}"'},
            content=b"{}",
            phase_timeout=5,
        )
    assert len(sender._urls) <= 512
    assert len(sender._headers) <= 512
    assert seen[-1].headers["If-Match"] == 'W/"1199"'
    assert seen[-1].url.path == "/api/data/v9.2/accounts(1199)"


def test_a_relative_url_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Sender(transport=recording([])).url("accounts")
