"""DataverseClient against the Web API emulator, in process (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import httpx
import orjson
import pytest

from shared.dataverse import (
    MAX_BATCH_REQUESTS,
    BearerTokenAuth,
    DataverseClient,
    RequestOptions,
)
from shared.errors import DataverseError, NotFound, PreconditionFailed, Throttled
from shared.settings import DEFAULT_WRITE_TAG
from tests.dataverse_doubles import FakeTime, TokenIssuer, emulated_client
from tools.emulator import DataverseEmulator


@pytest.fixture
def emulator() -> DataverseEmulator:
    emulator = DataverseEmulator()
    emulator.add_table("contoso_invoice", alternate_keys=(("contoso_number",),))
    return emulator


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def client(emulator: DataverseEmulator, time: FakeTime) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator, time=time) as client:
        yield client


# --- writes and reads ----------------------------------------------------------------------------


async def test_create_returns_the_id_dataverse_reports(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    account_id = await client.create("accounts", {"name": "Northwind"})
    (row,) = emulator.rows("accounts")
    assert UUID(row["accountid"]) == account_id
    assert row["name"] == "Northwind"


async def test_create_returning_gives_the_stored_row(client: DataverseClient) -> None:
    row = await client.create_returning("accounts", {"name": "Fabrikam"}, select=["name"])
    assert row["name"] == "Fabrikam"
    assert row["@odata.etag"].startswith('W/"')


async def test_writes_carry_the_app_tag_by_default(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    account_id = await client.create("accounts", {"name": "A"})
    await client.update("accounts", account_id, {"name": "B"})
    await client.create("accounts", {"name": "C"}, options=RequestOptions(tag="other"))
    await client.create("accounts", {"name": "D"}, options=RequestOptions(tag=""))
    assert [request.tag for request in emulator.writes()] == [
        DEFAULT_WRITE_TAG,
        DEFAULT_WRITE_TAG,
        "other",
        None,
    ]


async def test_option_headers_reach_the_server(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    step = uuid4()
    caller = uuid4()
    options = RequestOptions(
        bypass_business_logic="CustomSync,CustomAsync",
        bypass_step_ids=(step,),
        suppress_duplicate_detection=False,
        caller_object_id=caller,
        solution_unique_name="ContosoEvents",
    )
    await client.create("accounts", {"name": "A"}, options=options)
    headers = emulator.writes()[-1].headers
    assert headers["mscrm.bypassbusinesslogicexecution"] == "CustomSync,CustomAsync"
    assert headers["mscrm.bypassbusinesslogicexecutionstepids"] == str(step)
    assert headers["mscrm.suppressduplicatedetection"] == "false"
    assert headers["callerobjectid"] == str(caller)
    assert headers["mscrm.solutionuniquename"] == "ContosoEvents"
    assert headers["authorization"] == "Bearer token-1"


async def test_update_never_creates(client: DataverseClient, emulator: DataverseEmulator) -> None:
    with pytest.raises(NotFound) as caught:
        await client.update("accounts", uuid4(), {"name": "ghost"})
    assert caught.value.status == 404
    assert caught.value.code == "0x80040217"
    assert caught.value.retryable is False
    assert caught.value.request_id
    assert emulator.rows("accounts") == []
    assert emulator.writes()[-1].headers["if-match"] == "*"


async def test_stale_etag_is_a_typed_precondition_failure(client: DataverseClient) -> None:
    account_id = await client.create("accounts", {"name": "A"})
    etag = (await client.retrieve("accounts", account_id))["@odata.etag"]
    await client.update("accounts", account_id, {"name": "B"}, etag=etag)
    with pytest.raises(PreconditionFailed) as caught:
        await client.update("accounts", account_id, {"name": "C"}, etag=etag)
    assert caught.value.status == 412
    assert (await client.retrieve("accounts", account_id, select=["name"]))["name"] == "B"


async def test_upsert_by_alternate_key_and_its_variants(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    key = {"contoso_number": "INV-'7'"}  # a quote inside the key value
    created = await client.upsert("contoso_invoices", key, {"contoso_total": 10})
    updated = await client.upsert("contoso_invoices", key, {"contoso_total": 12})
    assert created == updated
    (row,) = emulator.rows("contoso_invoices")
    assert (row["contoso_number"], row["contoso_total"]) == ("INV-'7'", 12)
    with pytest.raises(PreconditionFailed):
        await client.upsert("contoso_invoices", key, {"contoso_total": 1}, mode="create_only")
    with pytest.raises(NotFound):
        await client.upsert("contoso_invoices", {"contoso_number": "none"}, {}, mode="update_only")
    assert len(emulator.rows("contoso_invoices")) == 1


async def test_upsert_by_id_creates_then_updates(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    row_id = uuid4()
    assert await client.upsert("accounts", row_id, {"name": "first"}) == row_id
    await client.upsert("accounts", row_id, {"name": "second"})
    assert [row["name"] for row in emulator.rows("accounts")] == ["second"]


async def test_delete_with_and_without_etag(client: DataverseClient) -> None:
    account_id = await client.create("accounts", {"name": "A"})
    etag = (await client.retrieve("accounts", account_id))["@odata.etag"]
    await client.update("accounts", account_id, {"name": "B"})
    with pytest.raises(PreconditionFailed):
        await client.delete("accounts", account_id, etag=etag)
    await client.delete("accounts", account_id)
    with pytest.raises(NotFound):
        await client.retrieve("accounts", account_id)


async def test_lookup_binding_and_expand(client: DataverseClient) -> None:
    account_id = await client.create("accounts", {"name": "Parent"})
    contact_id = await client.create(
        "contacts",
        {"lastname": "Child", "parentcustomerid_account@odata.bind": f"/accounts({account_id})"},
    )
    contact = await client.retrieve("contacts", contact_id, expand="parentcustomerid($select=name)")
    assert contact["_parentcustomerid_value"] == str(account_id)
    assert contact["parentcustomerid"]["name"] == "Parent"
    with pytest.raises(NotFound):
        await client.create(
            "contacts", {"parentcustomerid_account@odata.bind": f"/accounts({uuid4()})"}
        )


async def test_query_filters_orders_and_pages_lazily(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    for number in range(7):
        await client.create("accounts", {"name": f"n{number}", "numberofemployees": number})
    rows = client.query(
        "accounts",
        filter="numberofemployees ge 2 and not (name eq 'n5')",
        select=["name"],
        orderby="numberofemployees desc",
        page_size=2,
    )
    before = len(emulator.requests)
    first = await anext(rows)
    assert first["name"] == "n6"
    assert len(emulator.requests) == before + 1  # one page fetched, no more
    rest = [row["name"] async for row in rows]
    assert rest == ["n4", "n3", "n2"]
    assert len(emulator.requests) == before + 2
    top = [row async for row in client.query("accounts", top=3, filter="startswith(name,'n')")]
    assert len(top) == 3


async def test_first_takes_one_row_in_one_request(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    for number in range(3):
        await client.create("accounts", {"name": f"f{number}", "numberofemployees": number})
    before = len(emulator.requests)
    found = await client.first("accounts", select=["name"], orderby="numberofemployees desc")
    assert found is not None
    assert found["name"] == "f2"
    assert await client.first("accounts", filter="name eq 'nobody'") is None
    assert [request.query.get("$top") for request in emulator.requests[before:]] == ["1", "1"]


async def test_fetch_xml(client: DataverseClient) -> None:
    await client.create("accounts", {"name": "a", "statecode": 0})
    await client.create("accounts", {"name": "b", "statecode": 1})
    fetch = (
        '<fetch><entity name="account"><attribute name="name"/>'
        '<filter><condition attribute="statecode" operator="eq" value="1"/></filter>'
        "</entity></fetch>"
    )
    assert [row["name"] async for row in client.fetch("accounts", fetch)] == ["b"]


async def test_associate_and_disassociate(client: DataverseClient) -> None:
    account_id = await client.create("accounts", {"name": "A"})
    contact_id = await client.create("contacts", {"lastname": "C"})
    await client.associate(
        "accounts", account_id, "contact_customer_accounts", "contacts", contact_id
    )
    await client.associate(
        "accounts", account_id, "contact_customer_accounts", "contacts", contact_id
    )
    related = await client.retrieve("accounts", account_id)  # exists
    assert related["name"] == "A"
    response = await client._send("GET", f"accounts({account_id})/contact_customer_accounts")
    assert [row["contactid"] for row in orjson.loads(response.content)["value"]] == [
        str(contact_id)
    ]
    await client.disassociate("accounts", account_id, "contact_customer_accounts", contact_id)
    response = await client._send("GET", f"accounts({account_id})/contact_customer_accounts")
    assert orjson.loads(response.content)["value"] == []


async def test_actions_and_functions(client: DataverseClient, emulator: DataverseEmulator) -> None:
    calls: list[tuple[object, dict[str, object]]] = []

    def recalculate(bound: object, **parameters: object) -> dict[str, object]:
        calls.append((bound, parameters))
        return {"Result": "ok"}

    emulator.actions["contoso_Recalculate"] = recalculate
    account_id = await client.create("accounts", {"name": "A"})
    assert await client.action("contoso_Recalculate", {"Depth": 2}) == {"Result": "ok"}
    await client.action("contoso_Recalculate", bound_to=("accounts", account_id))
    assert calls == [(None, {"Depth": 2}), (("accounts", str(account_id)), {})]
    who = await client.function("WhoAmI")
    assert UUID(who["OrganizationId"]) == emulator.organization_id
    with pytest.raises(NotFound):
        await client.action("contoso_Missing")


# --- $batch -------------------------------------------------------------------------------


async def test_batch_body_is_valid_multipart(client: DataverseClient) -> None:
    batch = client.batch()
    changeset = batch.changeset()
    reference = changeset.create("accounts", {"name": "A"})
    changeset.create("contacts", {"parentcustomerid_account@odata.bind": reference})
    batch.retrieve("accounts", uuid4(), select=["name"])
    body = batch.body("batch_test")
    head = b"Content-Type: multipart/mixed; boundary=batch_test\r\n\r\n"
    document = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    assert document.is_multipart()
    parts = list(document.iter_parts())
    assert len(parts) == 2
    inner = list(parts[0].iter_parts())
    assert [part.get_content_type() for part in inner] == ["application/http"] * 2
    assert [part["Content-ID"] for part in inner] == ["1", "2"]
    request = inner[1].get_payload(decode=True)
    assert isinstance(request, bytes)
    assert request.startswith(b"POST https://contoso.crm.dynamics.com/api/data/v9.2/contacts?tag=")
    assert b'"parentcustomerid_account@odata.bind":"$1"' in request
    retrieve = parts[1].get_payload(decode=True)
    assert isinstance(retrieve, bytes)
    assert retrieve.startswith(b"GET ")
    assert b"\r\n" in body
    assert b"\n" not in body.replace(b"\r\n", b"")  # every line ends with CRLF


async def test_changeset_applies_together_with_references(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    batch = client.batch()
    changeset = batch.changeset()
    reference = changeset.create("accounts", {"name": "Parent"})
    changeset.create(
        "contacts", {"lastname": "Kid", "parentcustomerid_account@odata.bind": reference}
    )
    results = await batch.send()
    assert [result.status for result in results] == [204, 204]
    (account,) = emulator.rows("accounts")
    (contact,) = emulator.rows("contacts")
    assert contact["_parentcustomerid_value"] == account["accountid"]
    assert results[0].entity_id == UUID(account["accountid"])
    assert client.requests_sent == 1


async def test_failing_changeset_rolls_back_as_a_whole(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    batch = client.batch()
    changeset = batch.changeset()
    changeset.create("accounts", {"name": "applied then undone"})
    changeset.update("accounts", uuid4(), {"name": "missing row"})
    with pytest.raises(NotFound):
        await batch.send()
    assert emulator.rows("accounts") == []


async def test_continue_on_error_reports_each_result(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    batch = client.batch(continue_on_error=True)
    batch.create("accounts", {"name": "one"})
    batch.update("accounts", uuid4(), {"name": "missing"})
    batch.create("accounts", {"name": "three"})
    results = await batch.send()
    assert [result.status for result in results] == [204, 404, 204]
    assert isinstance(results[1].error, NotFound)
    assert sorted(row["name"] for row in emulator.rows("accounts")) == ["one", "three"]


async def test_without_continue_on_error_processing_stops(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    batch = client.batch()
    batch.create("accounts", {"name": "one"})
    batch.update("accounts", uuid4(), {"name": "missing"})
    batch.create("accounts", {"name": "never"})
    with pytest.raises(NotFound):
        await batch.send()
    assert [row["name"] for row in emulator.rows("accounts")] == ["one"]


async def test_batch_size_limit_and_upsert_many(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    batch = client.batch()
    for number in range(MAX_BATCH_REQUESTS):
        batch.create("accounts", {"name": str(number)})
    with pytest.raises(ValueError, match="at most 1000"):
        batch.create("accounts", {"name": "one too many"})
    rows = [({"contoso_number": f"INV-{n}"}, {"contoso_total": n}) for n in range(1200)]
    results = await client.upsert_many("contoso_invoices", rows)
    assert len(results) == 1200
    assert all(result.status == 204 for result in results)
    assert len(emulator.rows("contoso_invoices")) == 1200
    assert client.requests_sent == 2  # 1000 + 200


# --- resilience ---------------------------------------------------------------------------


async def test_429_waits_exactly_retry_after(
    client: DataverseClient, emulator: DataverseEmulator, time: FakeTime
) -> None:
    emulator.inject(429, count=2, retry_after=3)
    await client.create("accounts", {"name": "A"})
    assert time.sleeps == [3.0, 3.0]
    assert len(emulator.rows("accounts")) == 1
    assert client.requests_sent == 3


async def test_429_pauses_every_call_of_the_process(
    client: DataverseClient, emulator: DataverseEmulator, time: FakeTime
) -> None:
    emulator.inject(429, retry_after=5)
    await client.create("accounts", {"name": "A"})
    started = time.now
    time.now -= 4  # the next call starts while the pause still has 4 s to run
    await client.create("accounts", {"name": "B"})
    assert time.sleeps[-1] == pytest.approx(4.0)
    assert time.now == pytest.approx(started)


async def test_retry_after_beyond_the_budget_gives_up_at_once(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    emulator.inject(429, retry_after=120)
    async with emulated_client(emulator, time=time, budget=30) as client:
        with pytest.raises(Throttled) as caught:
            await client.create("accounts", {"name": "A"})
    assert caught.value.retryable is True
    assert time.sleeps == []  # never waits beyond the budget
    assert emulator.rows("accounts") == []


async def test_a_storm_of_429s_ends_within_the_pause_bound_and_the_attempts(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    # A 429's pause may stretch a call past its budget (waiting beats a redelivery), up to
    # RetryPolicy.max_pause_seconds and max_attempts.
    emulator.inject(429, count=1000, retry_after=40)
    async with emulated_client(emulator, time=time, budget=10) as client:
        with pytest.raises(Throttled) as caught:
            await client.update("accounts", uuid4(), {"name": "x"})
    assert caught.value.retryable
    assert time.sleeps == [40.0, 40.0]  # a third wait would end past 120 s
    emulator.clear_faults()
    emulator.inject(429, count=1000, retry_after=4)
    time.sleeps.clear()
    async with emulated_client(emulator, time=time, budget=10) as client:
        with pytest.raises(Throttled):
            await client.update("accounts", uuid4(), {"name": "x"})
    assert time.sleeps == [4.0] * 5  # six attempts


async def test_503_retries_with_backoff(
    client: DataverseClient, emulator: DataverseEmulator, time: FakeTime
) -> None:
    emulator.inject(503, count=2)
    await client.create("accounts", {"name": "A"})
    assert time.sleeps == [1.0, 2.0]  # ceiling 0.5 * 2^attempt (jitter fixed to the ceiling)


async def test_client_errors_are_not_retried(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    emulator.inject(400)
    with pytest.raises(DataverseError) as caught:
        await client.create("accounts", {"name": "A"})
    assert caught.value.status == 400
    assert caught.value.retryable is False
    assert client.requests_sent == 1


async def test_a_post_is_resent_when_the_connection_never_opened(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    inner = httpx.ASGITransport(app=emulator)
    failures = [httpx.ConnectError("refused")]

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if failures:
                raise failures.pop()
            return await inner.handle_async_request(request)

    async with emulated_client(emulator, time=time, transport=Flaky()) as client:
        await client.create("accounts", {"name": "A"})
    assert len(emulator.rows("accounts")) == 1


async def test_a_post_is_not_replayed_once_it_may_have_been_processed(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    inner = httpx.ASGITransport(app=emulator)

    class LosesResponses(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await inner.handle_async_request(request)  # Dataverse applies it...
            raise httpx.ReadTimeout("no response", request=request)  # ...we never hear back

    async with emulated_client(emulator, time=time, transport=LosesResponses()) as client:
        with pytest.raises(DataverseError) as caught:
            await client.create("accounts", {"name": "A"})
        assert caught.value.retryable is True  # the broker redelivers; we do not replay
        assert caught.value.code == "NoResponse"
        with pytest.raises(DataverseError):
            await client.retrieve("accounts", uuid4())  # idempotent: retried until the budget
    assert [request.method for request in emulator.requests].count("POST") == 1
    assert [request.method for request in emulator.requests].count("GET") > 1
    assert len(emulator.rows("accounts")) == 1


async def test_401_refreshes_the_token_once(emulator: DataverseEmulator, time: FakeTime) -> None:
    issuer = TokenIssuer(time)
    async with emulated_client(emulator, time=time, issuer=issuer) as client:
        await client.create("accounts", {"name": "A"})
        emulator.revoke("token-1")
        await client.create("accounts", {"name": "B"})
        assert issuer.issued == ["token-1", "token-2"]
        emulator.revoke("token-2")
        emulator.revoke("token-3")
        time.now += 30  # forced refreshes are rate-limited (test_dataverse_client_edges)
        with pytest.raises(DataverseError) as caught:
            await client.create("accounts", {"name": "C"})
    assert caught.value.status == 401
    assert issuer.issued == ["token-1", "token-2", "token-3"]  # one refresh, not a loop
    assert issuer.scopes[0] == ("https://contoso.crm.dynamics.com/.default",)


async def test_a_401_on_a_fresh_token_is_replayed_once_not_sent_again_first(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    # The Sender sets a fresh token itself and hands a 401 to the auth flow as its first
    # answer: sending the request through the flow anew would cost a third request.
    issuer = TokenIssuer(time)
    sent: list[str] = []

    class Counting(httpx.ASGITransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.headers["Authorization"])
            return await super().handle_async_request(request)

    transport = Counting(app=emulator)
    async with emulated_client(emulator, time=time, issuer=issuer, transport=transport) as client:
        await client.create("accounts", {"name": "A"})
        emulator.revoke("token-1")
        sent.clear()
        await client.create("accounts", {"name": "B"})
    assert sent == ["Bearer token-1", "Bearer token-2"]  # the 401, then the one replay
    assert issuer.issued == ["token-1", "token-2"]


async def test_tokens_are_cached_and_refreshed_before_expiry(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    issuer = TokenIssuer(time, lifetime=3600)
    async with emulated_client(emulator, time=time, issuer=issuer) as client:
        for number in range(5):
            await client.create("accounts", {"name": str(number)})
        assert issuer.issued == ["token-1"]
        time.now += 3600 - 200  # inside the refresh margin
        await client.create("accounts", {"name": "later"})
    assert issuer.issued == ["token-1", "token-2"]


async def test_a_fresh_token_is_used_without_waiting_on_a_refresh_lock(
    emulator: DataverseEmulator, time: FakeTime
) -> None:
    # Every request took the refresh lock, even with a fresh token in hand: a cost on the
    # path of each call, and a queue behind any refresh.
    async with emulated_client(emulator, time=time) as client:
        await client.create("accounts", {"name": "first"})  # fetches token-1
        auth = client._http._auth
        assert isinstance(auth, BearerTokenAuth)
        async with auth._lock:  # as if a refresh were under way
            await asyncio.wait_for(client.create("accounts", {"name": "second"}), 2)
    assert len(emulator.rows("accounts")) == 2


async def test_concurrency_is_limited_per_process(emulator: DataverseEmulator) -> None:
    emulator.latency = 0.01
    async with emulated_client(emulator, max_concurrency=4) as client:
        await asyncio.gather(*(client.create("accounts", {"name": str(n)}) for n in range(24)))
    assert emulator.most_in_flight == 4
    assert len(emulator.rows("accounts")) == 24


async def test_error_messages_never_carry_the_token(
    client: DataverseClient, emulator: DataverseEmulator
) -> None:
    emulator.inject(400)
    with pytest.raises(DataverseError) as caught:
        await client.create("accounts", {"name": "A"})
    assert "token-1" not in str(caught.value)
    assert "token-1" not in repr(caught.value.__dict__)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("inf", 300.0), ("9999", 300.0), ("-1", 1.0), ("0", 1.0), ("nan", 2.0), ("2.5", 2.5)],
)
def test_retry_after_is_clamped_to_a_sane_range(header: str, expected: float) -> None:
    """Finding: `Retry-After: inf` throttled the process until a restart; `-1` gave no wait."""
    import httpx

    from shared.dataverse.responses import retry_after

    assert retry_after(httpx.Response(429, headers={"Retry-After": header}), 1) == expected
