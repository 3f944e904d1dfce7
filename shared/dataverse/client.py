"""`DataverseClient`: the Web API client handlers write back through.

One `httpx.AsyncClient` per process, shared by every invocation. Everything that decides whether
a request is sent again lives in `_send`:
- 429 waits `Retry-After` and pauses every call of the process until then (all instances share
  one app user's budget; hammering a throttled server only extends the penalty);
- 503, and for idempotent requests 502/504, timeouts and dropped connections, retry with
  exponential backoff and full jitter;
- a POST is sent again only where the server cannot have processed it (the connection was never
  made, or Dataverse answered 429/503);
- each call has a time budget (waits included), and a 429's pause may stretch it to
  `max_pause_seconds`; when the next wait would overrun that, a retryable `DataverseError`
  (`Throttled` for a 429) is raised so the message waits in the broker instead;
- at most `max_concurrency` requests are in flight per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx
import orjson

from shared import metrics, tracing
from shared.errors import (
    DataverseError,
    InvalidResponse,
    NotFound,
    PreconditionFailed,
    Throttled,
    Unauthorized,
)
from shared.settings import DEFAULT_WRITE_TAG

from .addressing import RowAddress, id_from_entity_url, literal, row_path
from .multipart import HttpPart, header, read_parts, write_batch
from .pacing import AdaptiveLimit

API_PATH = "/api/data/v9.2/"
MAX_BATCH_REQUESTS = 1000  # Dataverse's limit per $batch

_BASE_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}
_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class RequestOptions:
    """Optional Web API behaviours, per client (defaults) or per call (overrides).

    `tag`: the `tag` query parameter on writes; None keeps the client's, "" sends none.
    `bypass_business_logic`: `CustomSync`, `CustomAsync` or both, comma separated
    (needs the prvBypassCustomBusinessLogic privilege).
    `bypass_step_ids`: skip only these steps, e.g. the one that would echo our write back.
    `suppress_duplicate_detection`: False asks Dataverse to run duplicate detection (412 on a
    duplicate). `caller_object_id`: impersonate this Entra object id (needs the Delegate role).
    `solution_unique_name`: create solution components inside this solution.
    """

    tag: str | None = None
    bypass_business_logic: str | None = None
    bypass_step_ids: tuple[UUID, ...] = ()
    suppress_duplicate_detection: bool | None = None
    caller_object_id: UUID | str | None = None
    solution_unique_name: str | None = None

    def over(self, defaults: RequestOptions) -> RequestOptions:
        """These options, with the unset ones taken from `defaults`."""
        return RequestOptions(
            tag=defaults.tag if self.tag is None else self.tag,
            bypass_business_logic=self.bypass_business_logic or defaults.bypass_business_logic,
            bypass_step_ids=self.bypass_step_ids or defaults.bypass_step_ids,
            suppress_duplicate_detection=(
                defaults.suppress_duplicate_detection
                if self.suppress_duplicate_detection is None
                else self.suppress_duplicate_detection
            ),
            caller_object_id=self.caller_object_id or defaults.caller_object_id,
            solution_unique_name=self.solution_unique_name or defaults.solution_unique_name,
        )

    def headers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.bypass_business_logic:
            found["MSCRM.BypassBusinessLogicExecution"] = self.bypass_business_logic
        if self.bypass_step_ids:
            found["MSCRM.BypassBusinessLogicExecutionStepIds"] = ",".join(
                str(step) for step in self.bypass_step_ids
            )
        if self.suppress_duplicate_detection is not None:
            found["MSCRM.SuppressDuplicateDetection"] = str(
                self.suppress_duplicate_detection
            ).lower()
        if self.caller_object_id:
            found["CallerObjectId"] = str(self.caller_object_id)
        if self.solution_unique_name:
            found["MSCRM.SolutionUniqueName"] = self.solution_unique_name
        return found


@dataclass(frozen=True)
class RetryPolicy:
    budget_seconds: float = 45.0
    # A 429's Retry-After is waited up to this long from the call's start, budget or not.
    max_pause_seconds: float = 120.0
    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 8.0


# Requests in flight per connection pool (see DataverseClient.__init__).
POOL_SLOTS = 8


class DataverseClient:
    def __init__(
        self,
        environment_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        options: RequestOptions | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 8,
        adaptive_concurrency: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """`auth` is a `BearerTokenAuth` in production; `transport` is the test seam (an
        `httpx.ASGITransport` over the emulator, or a mock)."""
        self.environment_url = environment_url.rstrip("/")
        self.api_url = self.environment_url + API_PATH
        # Several small connection pools rather than one large one: httpcore scans every
        # connection of its pool (an expiry check per idle one) to place each request, so one
        # pool of 100 connections cost 5.6 ms of CPU per request at 52 in flight, where pools
        # of POOL_SLOTS cost what a single small pool does (benchmarks/writeback.py (d)).
        pools = max(1, math.ceil(max_concurrency / POOL_SLOTS))
        self._pools = [
            httpx.AsyncClient(
                base_url=self.api_url,
                auth=auth,
                transport=transport,
                headers=_BASE_HEADERS,
                timeout=httpx.Timeout(30.0),
                limits=httpx.Limits(max_connections=min(max_concurrency, POOL_SLOTS) * 2),
            )
            for _ in range(pools)
        ]
        self._next_pool = 0
        # Our writes carry the app's tag unless told otherwise: the loop guard recognises them.
        self.options = options or RequestOptions(tag=DEFAULT_WRITE_TAG)
        self.retry = retry or RetryPolicy()
        # At most max_concurrency in flight; fewer after 429s, climbing back on successes, so
        # that instances sharing one application user converge to their share (pacing.py).
        self.concurrency = AdaptiveLimit(max_concurrency, adaptive=adaptive_concurrency)
        metrics.track(self.concurrency)  # the current limit, as a gauge
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._throttled_until = 0.0
        self.requests_sent = 0  # every HTTP request, retries included: for budgets and tests

    def _pool(self) -> httpx.AsyncClient:
        self._next_pool = (self._next_pool + 1) % len(self._pools)
        return self._pools[self._next_pool]

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- writes ---------------------------------------------------------------------------------

    async def create(
        self, entity_set: str, record: Mapping[str, Any], *, options: RequestOptions | None = None
    ) -> UUID:
        """Create a row; returns its id (from the `OData-EntityId` header)."""
        response = await self._write("POST", entity_set, record, options, idempotent=False)
        return self._entity_id(response)

    async def create_returning(
        self,
        entity_set: str,
        record: Mapping[str, Any],
        *,
        select: Sequence[str] | None = None,
        options: RequestOptions | None = None,
    ) -> dict[str, Any]:
        """Create a row and return it as stored (`Prefer: return=representation`)."""
        response = await self._write(
            "POST",
            entity_set,
            record,
            options,
            idempotent=False,
            headers={"Prefer": "return=representation"},
            params=_select(select),
        )
        return _json(response)

    async def update(
        self,
        entity_set: str,
        row: RowAddress,
        changes: Mapping[str, Any],
        *,
        etag: str | None = None,
        options: RequestOptions | None = None,
    ) -> None:
        """Update an existing row, never creating one (`If-Match: *`). With `etag`, only if the
        row has not changed since it was read; otherwise `PreconditionFailed`."""
        await self._write(
            "PATCH",
            row_path(entity_set, row),
            changes,
            options,
            idempotent=True,
            headers={"If-Match": etag or "*"},
        )

    async def upsert(
        self,
        entity_set: str,
        row: RowAddress,
        record: Mapping[str, Any],
        *,
        mode: str = "upsert",
        options: RequestOptions | None = None,
    ) -> UUID | None:
        """Create or update the row at `row` (an id or an alternate key). `mode="create_only"`
        refuses to update (`If-None-Match: *`), `mode="update_only"` refuses to create
        (`If-Match: *`). Returns the row id when Dataverse reports it."""
        headers = _UPSERT_MODES.get(mode)
        if headers is None:
            raise ValueError(f"mode must be upsert, create_only or update_only, not {mode!r}")
        response = await self._write(
            "PATCH", row_path(entity_set, row), record, options, idempotent=True, headers=headers
        )
        entity_url = response.headers.get("OData-EntityId")
        found = id_from_entity_url(entity_url) if entity_url else None
        return found or (row if isinstance(row, UUID) else None)

    async def delete(
        self,
        entity_set: str,
        row: RowAddress,
        *,
        etag: str | None = None,
        options: RequestOptions | None = None,
    ) -> None:
        headers = {"If-Match": etag} if etag else {}
        await self._write(
            "DELETE", row_path(entity_set, row), None, options, idempotent=True, headers=headers
        )

    async def associate(
        self,
        entity_set: str,
        row: RowAddress,
        navigation_property: str,
        target_set: str,
        target_row: RowAddress,
        *,
        options: RequestOptions | None = None,
    ) -> None:
        """Relate two rows through a collection-valued navigation property."""
        reference = {"@odata.id": self.api_url + row_path(target_set, target_row)}
        path = f"{row_path(entity_set, row)}/{navigation_property}/$ref"
        # Associating twice leaves one association: safe to send again.
        await self._write("POST", path, reference, options, idempotent=True)

    async def disassociate(
        self,
        entity_set: str,
        row: RowAddress,
        navigation_property: str,
        target_row: RowAddress | None = None,
        *,
        options: RequestOptions | None = None,
    ) -> None:
        """Remove an association: name `target_row` for a collection-valued property, leave it
        out to clear a single-valued one."""
        target = "" if target_row is None else row_path("", target_row)
        path = f"{row_path(entity_set, row)}/{navigation_property}{target}/$ref"
        await self._write("DELETE", path, None, options, idempotent=True)

    async def action(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        bound_to: tuple[str, RowAddress] | None = None,
        options: RequestOptions | None = None,
    ) -> dict[str, Any] | None:
        """Call an action (POST). Bound actions take `bound_to=(entity_set, row)`."""
        path = name if bound_to is None else f"{row_path(*bound_to)}/Microsoft.Dynamics.CRM.{name}"
        response = await self._write("POST", path, parameters or {}, options, idempotent=False)
        return _json(response) if response.content else None

    # --- reads ----------------------------------------------------------------------------------

    async def retrieve(
        self,
        entity_set: str,
        row: RowAddress,
        *,
        select: Sequence[str] | None = None,
        expand: str | None = None,
    ) -> dict[str, Any]:
        params = _select(select)
        if expand:
            params["$expand"] = expand
        return _json(await self._send("GET", row_path(entity_set, row), params=params))

    async def function(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        bound_to: tuple[str, RowAddress] | None = None,
    ) -> dict[str, Any]:
        """Call a function (GET), parameters passed as aliases: `Name(p=@p)?@p=<literal>`."""
        parameters = parameters or {}
        inner = ",".join(f"{key}=@{key}" for key in parameters)
        path = f"{name}({inner})"
        if bound_to is not None:
            path = f"{row_path(*bound_to)}/Microsoft.Dynamics.CRM.{path}"
        params = {f"@{key}": literal(value) for key, value in parameters.items()}
        return _json(await self._send("GET", path, params=params))

    def query(
        self,
        entity_set: str,
        *,
        filter: str | None = None,
        select: Sequence[str] | None = None,
        orderby: str | None = None,
        top: int | None = None,
        expand: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Rows matching an OData query, fetched page by page as they are consumed."""
        params = _select(select)
        for option, value in (("$filter", filter), ("$orderby", orderby), ("$expand", expand)):
            if value:
                params[option] = value
        if top is not None:
            params["$top"] = str(top)
        return self._pages(entity_set, params, page_size)

    async def first(
        self,
        entity_set: str,
        *,
        filter: str | None = None,
        select: Sequence[str] | None = None,
        orderby: str | None = None,
    ) -> dict[str, Any] | None:
        """The first row of a query (`$top=1`, one request), or None when nothing matches."""
        async for row in self.query(
            entity_set, filter=filter, select=select, orderby=orderby, top=1
        ):
            return row
        return None

    def fetch(
        self, entity_set: str, fetch_xml: str, *, page_size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Rows of a FetchXML query."""
        return self._pages(entity_set, {"fetchXml": fetch_xml}, page_size)

    async def _pages(
        self, path: str, params: dict[str, str], page_size: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        url: str | None = path
        query: dict[str, str] | None = params
        while url is not None:
            page = _json(await self._send("GET", url, params=query, headers=headers))
            for row in page.get("value", []):
                yield row
            url = page.get("@odata.nextLink")
            query = None  # the next link carries the whole query

    # --- $batch -----------------------------------------------------------------------------------

    def batch(self, *, continue_on_error: bool = False) -> Batch:
        return Batch(self, continue_on_error=continue_on_error)

    async def upsert_many(
        self,
        entity_set: str,
        rows: Sequence[tuple[RowAddress, Mapping[str, Any]]],
        *,
        options: RequestOptions | None = None,
        atomic: bool = False,
    ) -> list[BatchResult]:
        """Upsert many rows in as few `$batch` requests as the 1000-request limit allows.
        `atomic=True` puts each batch in one change set (all or nothing per batch)."""
        results: list[BatchResult] = []
        for start in range(0, len(rows), MAX_BATCH_REQUESTS):
            batch = self.batch(continue_on_error=not atomic)
            target = batch.changeset() if atomic else batch
            for row, record in rows[start : start + MAX_BATCH_REQUESTS]:
                target.upsert(entity_set, row, record, options=options)
            results.extend(await batch.send())
        return results

    # --- the one place that sends ---------------------------------------------------------------

    async def _write(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        options: RequestOptions | None,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        effective = (options or RequestOptions()).over(self.options)
        all_headers = {**effective.headers(), **(headers or {})}
        query = dict(params or {})
        if effective.tag:
            query["tag"] = effective.tag
        content = None
        if body is not None:
            content = orjson.dumps(body, default=_json_default)
            all_headers["Content-Type"] = _JSON
        return await self._send(
            method, path, params=query, headers=all_headers, content=content, idempotent=idempotent
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        started = self._clock()
        deadline = started + self.retry.budget_seconds
        # A 429's pause may run past the budget, up to this: waiting here is cheaper than a
        # redelivery, and the handler's own deadline (0.8 of the claim's lease) is further off.
        pause_deadline = started + max(self.retry.budget_seconds, self.retry.max_pause_seconds)
        attempt = 0
        while True:
            attempt += 1
            await self._wait_out_pause(pause_deadline, method, path)
            delay: float | None = None
            try:
                async with self.concurrency:
                    if self._throttled_until > self._clock():
                        # A 429 came back while this call queued for a slot: no request may
                        # leave during the pause, queued or not.
                        attempt -= 1
                        continue
                    self.requests_sent += 1
                    remaining = max(0.1, deadline - self._clock())
                    # One deadline for the whole exchange: httpx's timeouts are per read, so
                    # a body dripping a byte at a time would otherwise never time out.
                    with tracing.request_span(method, path, attempt) as span:
                        try:
                            async with asyncio.timeout(remaining):
                                response = await self._pool().request(
                                    method,
                                    path,
                                    params=params,
                                    headers=headers,
                                    content=content,
                                    timeout=httpx.Timeout(min(30.0, remaining)),
                                )
                        except BaseException:
                            tracing.record_response(span, None, None)
                            metrics.request_done(None, None, None)
                            raise
                        code = _error_code(response)
                        tracing.record_response(span, response.status_code, code)
                        if response.status_code == 429:
                            metrics.request_done(429, code, _retry_after(response, attempt))
                        else:
                            metrics.request_done(response.status_code, code, None)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                # The request never reached Dataverse: safe to send again, even a POST.
                failure = DataverseError(
                    None,
                    "ConnectionFailed",
                    f"could not reach Dataverse: {type(error).__name__}",
                    retryable=True,
                    method=method,
                    url=path,
                )
                can_retry = True
            except (httpx.TransportError, TimeoutError) as error:
                # Timed out or dropped after sending: Dataverse may have applied it.
                failure = DataverseError(
                    None,
                    "NoResponse",
                    f"no complete response from Dataverse: {type(error).__name__}",
                    retryable=True,
                    method=method,
                    url=path,
                )
                can_retry = idempotent
            else:
                if response.status_code < 400:
                    self.concurrency.succeeded()
                    return response
                failure = _error_from(response, method, path)
                status = response.status_code
                if status == 401:
                    raise failure  # the auth flow already replayed it with a fresh token
                if status == 429:
                    self.concurrency.throttled_by(failure.code)
                    delay = _retry_after(response, attempt)
                    self._throttled_until = max(self._throttled_until, self._clock() + delay)
                    can_retry = True  # refused outright: nothing was applied
                elif status == 503:
                    delay = (
                        _retry_after(response, attempt)
                        if "Retry-After" in response.headers
                        else None
                    )
                    can_retry = True
                elif status in (502, 504):
                    can_retry = idempotent
                else:
                    raise failure
            if delay is None:
                ceiling = min(
                    self.retry.backoff_cap_seconds, self.retry.backoff_base_seconds * 2**attempt
                )
                delay = self._jitter(0.0, ceiling)
            if not can_retry or attempt >= self.retry.max_attempts:
                raise failure
            if self._clock() + delay >= (pause_deadline if failure.status == 429 else deadline):
                if failure.status == 429:
                    raise Throttled(
                        429,
                        failure.code,
                        f"Retry-After {delay:.1f} s is beyond what a call waits",
                        retryable=True,
                        request_id=failure.request_id,
                        method=method,
                        url=path,
                    )
                raise failure
            await self._sleep(delay)

    async def _wait_out_pause(self, deadline: float, method: str, path: str) -> None:
        """Wait while the process is paused by a 429, or raise `Throttled` when the pause ends
        past `deadline` (the call's start plus `max_pause_seconds`): the message then waits in
        the broker instead."""
        wait = self._throttled_until - self._clock()
        if wait <= 0:
            return
        if self._clock() + wait >= deadline:
            raise Throttled(
                429,
                "Throttled",
                f"Dataverse asked to pause {wait:.1f} s, beyond what a call waits",
                retryable=True,
                method=method,
                url=path,
            )
        await self._sleep(wait)

    @staticmethod
    def _entity_id(response: httpx.Response) -> UUID:
        url = response.headers.get("OData-EntityId")
        found = id_from_entity_url(url) if url else None
        if found is None:
            raise DataverseError(
                response.status_code,
                None,
                "Dataverse did not report the new row's id (no OData-EntityId header)",
                retryable=False,
            )
        return found


@dataclass
class BatchResult:
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None
    content_id: str | None
    error: DataverseError | None

    @property
    def entity_id(self) -> UUID | None:
        url = header(self.headers, "OData-EntityId")
        return id_from_entity_url(url) if url else None


class _Requests:
    """What a batch and a change set can hold."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self.parts: list[HttpPart] = []

    def _add(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        options: RequestOptions | None,
        headers: Mapping[str, str] | None = None,
        write: bool = True,
    ) -> str:
        return self._batch._append(self, method, path, body, options, headers, write)

    def create(
        self, entity_set: str, record: Mapping[str, Any], *, options: RequestOptions | None = None
    ) -> str:
        """Returns `$<n>`, a reference later requests of the same change set can use."""
        return self._add("POST", entity_set, record, options)

    def update(
        self,
        entity_set: str,
        row: RowAddress,
        changes: Mapping[str, Any],
        *,
        etag: str | None = None,
        options: RequestOptions | None = None,
    ) -> str:
        return self._add(
            "PATCH", row_path(entity_set, row), changes, options, {"If-Match": etag or "*"}
        )

    def upsert(
        self,
        entity_set: str,
        row: RowAddress,
        record: Mapping[str, Any],
        *,
        options: RequestOptions | None = None,
    ) -> str:
        return self._add("PATCH", row_path(entity_set, row), record, options)

    def delete(
        self, entity_set: str, row: RowAddress, *, options: RequestOptions | None = None
    ) -> str:
        return self._add("DELETE", row_path(entity_set, row), None, options)

    def action(
        self, name: str, parameters: Mapping[str, Any], *, options: RequestOptions | None = None
    ) -> str:
        return self._add("POST", name, parameters, options)


class ChangeSet(_Requests):
    """Requests applied atomically: all succeed, or none is applied."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        self.boundary = f"changeset_{uuid.uuid4()}"


class Batch(_Requests):
    """Up to 1000 requests in one HTTP round trip (`$batch`). Writes outside a change set are
    independent; without `continue_on_error` Dataverse stops at the first failure."""

    def __init__(self, client: DataverseClient, *, continue_on_error: bool) -> None:
        super().__init__(self)
        self._client = client
        self.continue_on_error = continue_on_error
        self._items: list[HttpPart | ChangeSet] = []
        self._count = 0
        self._writes = 0

    def changeset(self) -> ChangeSet:
        changeset = ChangeSet(self)
        self._items.append(changeset)
        return changeset

    def retrieve(
        self, entity_set: str, row: RowAddress, *, select: Sequence[str] | None = None
    ) -> str:
        query = f"?$select={','.join(select)}" if select else ""
        return self._add("GET", row_path(entity_set, row) + query, None, None, write=False)

    def __len__(self) -> int:
        return self._count

    def _append(
        self,
        owner: _Requests,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        options: RequestOptions | None,
        headers: Mapping[str, str] | None,
        write: bool,
    ) -> str:
        if self._count >= MAX_BATCH_REQUESTS:
            raise ValueError(f"a $batch holds at most {MAX_BATCH_REQUESTS} requests")
        if isinstance(owner, ChangeSet) and not write:
            raise ValueError("a change set cannot hold GET requests")
        self._count += 1
        self._writes += write
        effective = (options or RequestOptions()).over(self._client.options)
        part_headers = dict(headers or {})
        url = path if path.startswith("$") else self._client.api_url + path
        if write:
            part_headers.update(effective.headers())
            if effective.tag:
                url += ("&" if "?" in url else "?") + str(httpx.QueryParams({"tag": effective.tag}))
        part = HttpPart(method=method, url=url, headers=part_headers)
        if body is not None:
            part.headers["Content-Type"] = _JSON
            part.body = orjson.dumps(body, default=_json_default)
        if isinstance(owner, ChangeSet):
            part.content_id = str(self._count)
            owner.parts.append(part)
        else:
            self._items.append(part)
        return f"${self._count}"

    def body(self, boundary: str) -> bytes:
        items: list[HttpPart | tuple[str, Sequence[HttpPart]]] = []
        for item in self._items:
            items.append((item.boundary, item.parts) if isinstance(item, ChangeSet) else item)
        return write_batch(boundary, items)

    async def send(self) -> list[BatchResult]:
        """Send the batch; returns one result per response. Raises the first failure unless
        the batch continues on error (then each result carries its own `error`)."""
        if not self._count:
            return []
        boundary = f"batch_{uuid.uuid4()}"
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
        if self.continue_on_error:
            headers["Prefer"] = "odata.continue-on-error"
        response = await self._client._send(
            "POST",
            "$batch",
            headers=headers,
            content=self.body(boundary),
            idempotent=self._writes == 0,  # replaying writes could apply them twice
        )
        try:
            parts = read_parts(
                response.headers.get("Content-Type", ""), response.content, responses=True
            )
        except ValueError as unreadable:
            raise _invalid_response(
                response, f"an unreadable $batch response ({unreadable})"
            ) from None
        results = []
        for part in parts:
            error: DataverseError | None = None
            try:
                parsed = orjson.loads(part.body) if part.body else None
            except orjson.JSONDecodeError:
                # Keep the parts that could be read; this one alone is marked unreadable.
                parsed = None
                error = InvalidResponse(
                    part.status,
                    "InvalidResponse",
                    f"a $batch part's body is not JSON ({len(part.body)} bytes)",
                    retryable=True,
                )
            if error is None and part.status >= 400:
                error = _error_from_parts(part.status, part.headers, parsed)
            results.append(BatchResult(part.status, part.headers, parsed, part.content_id, error))
        if not self.continue_on_error:
            for result in results:
                if result.error is not None:
                    raise result.error
        return results


# --- helpers ---------------------------------------------------------------------------------


# Upsert modes and the preconditions that make them: none, refuse an existing row, refuse a new one.
_UPSERT_MODES: dict[str, dict[str, str]] = {
    "upsert": {},
    "create_only": {"If-None-Match": "*"},
    "update_only": {"If-Match": "*"},
}


def _select(select: Sequence[str] | None) -> dict[str, str]:
    return {"$select": ",".join(select)} if select else {}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        loaded = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _invalid_response(response, "a body that is not JSON") from None
    if not isinstance(loaded, dict):
        raise _invalid_response(response, f"a JSON {type(loaded).__name__}, not an object")
    return loaded


def _invalid_response(response: httpx.Response, what: str) -> InvalidResponse:
    kind = response.headers.get("Content-Type", "no content type").split(";", 1)[0]
    return InvalidResponse(
        response.status_code,
        "InvalidResponse",
        f"Dataverse answered {response.status_code} with {what} ({kind}, "
        f"{len(response.content)} bytes)",
        retryable=True,
        request_id=response.headers.get("x-ms-service-request-id"),
        method=response.request.method,
        url=response.request.url.path,
    )


def _json_default(value: Any) -> Any:
    from datetime import datetime
    from decimal import Decimal

    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Dataverse")


# Retry-After is clamped to this range: `inf` paused the process until a restart, `-1` or `0`
# sent the next request at once. The ceiling is the Service Bus lock duration, so a message
# handed back for a pause never returns before the pause is over.
RETRY_AFTER_MIN_SECONDS = 1.0
RETRY_AFTER_MAX_SECONDS = 300.0


def _error_code(response: httpx.Response) -> str | None:
    """Dataverse's error code of a failed response, for its span (None for a success)."""
    if response.status_code < 400:
        return None
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait: `Retry-After` as seconds or an HTTP date, else 2^attempt; clamped."""
    raw = response.headers.get("Retry-After")
    wait = float(2**attempt)
    if raw:
        try:
            wait = float(raw)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):  # neither: the default backoff
                wait = parsedate_to_datetime(raw).timestamp() - time.time()
    if math.isnan(wait):
        wait = float(2**attempt)
    return min(RETRY_AFTER_MAX_SECONDS, max(RETRY_AFTER_MIN_SECONDS, wait))


_ERRORS: dict[int, type[DataverseError]] = {
    401: Unauthorized,
    404: NotFound,
    412: PreconditionFailed,
}
# 401 is retryable at the message level: an admin can re-enable the application user while
# messages wait; the process refreshes its token at most every 30 s meanwhile (auth.py).
_RETRYABLE = frozenset({401, 408, 429, 500, 502, 503, 504})


def _error_from_parts(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    method: str | None = None,
    url: str | None = None,
) -> DataverseError:
    code = None
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = str(body["error"].get("message") or message)
    kind = _ERRORS.get(status, Throttled if status == 429 else DataverseError)
    return kind(
        status,
        code,
        message,
        retryable=status in _RETRYABLE,
        request_id=header(headers, "x-ms-service-request-id") or header(headers, "REQ_ID"),
        correlation_id=header(headers, "x-ms-correlation-request-id"),
        method=method,
        url=url,
    )


def _error_from(response: httpx.Response, method: str, path: str) -> DataverseError:
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    return _error_from_parts(response.status_code, dict(response.headers), body, method, path)
