"""`DataverseClient`: the Web API client handlers write back through.

One client per process, shared by every invocation; its operations read as the Web API's
(create, update, upsert, delete, associate, actions, functions, queries, `$batch`). When a
request is sent and sent again (429 pauses, backoff, what may be resent, time budgets, the
concurrency limit and the shared request budget) is one policy, in resend.py.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import orjson

from shared import metrics
from shared.errors import DataverseError
from shared.settings import DEFAULT_WRITE_TAG

from .addressing import RowAddress, id_from_entity_url, literal, row_path
from .batch import MAX_BATCH_REQUESTS, Batch, BatchResult, ChangeSet
from .budget import SharedBudget
from .pacing import AdaptiveLimit
from .resend import Resender, RetryPolicy
from .responses import json_default, json_object
from .sender import Sender
from .transport import AiohttpTransport

__all__ = [
    "API_PATH",
    "MAX_BATCH_REQUESTS",
    "Batch",
    "BatchResult",
    "ChangeSet",
    "DataverseClient",
    "RequestOptions",
    "RetryPolicy",
]

API_PATH = "/api/data/v9.2/"

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
        budget: SharedBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """`auth` is a `BearerTokenAuth` in production; `transport` is the test seam (an
        `httpx.ASGITransport` over the emulator, or a mock); `budget` is the request budget
        shared with the other instances (budget.py), or None."""
        self.environment_url = environment_url.rstrip("/")
        self.api_url = self.environment_url + API_PATH
        # httpx over aiohttp's pool unless a transport is given (tests pass the emulator's):
        # httpx's own pool cost several times the CPU per request (transport.py), and its
        # client a third of what was left (sender.py).
        self._http = Sender(
            auth=auth,
            transport=transport or AiohttpTransport(max_connections=max_concurrency * 2),
        )
        # Our writes carry the app's tag unless told otherwise: the loop guard recognises them.
        self.options = options or RequestOptions(tag=DEFAULT_WRITE_TAG)
        # At most max_concurrency in flight; fewer after 429s, climbing back on successes, so
        # that instances sharing one application user converge to their share (pacing.py).
        self.concurrency = AdaptiveLimit(max_concurrency, adaptive=adaptive_concurrency)
        metrics.track(self.concurrency)  # the current limit, as a gauge
        self._resender = Resender(
            retry or RetryPolicy(),
            self.concurrency,
            budget,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
        )

    @property
    def retry(self) -> RetryPolicy:
        return self._resender.retry

    @property
    def budget(self) -> SharedBudget | None:
        return self._resender.budget

    @property
    def requests_sent(self) -> int:
        """Every HTTP request, retries included: for budgets and tests."""
        return self._resender.requests_sent

    def effective_options(self, options: RequestOptions | None) -> RequestOptions:
        return (options or RequestOptions()).over(self.options)

    async def aclose(self) -> None:
        await self._http.aclose()

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
        return json_object(response)

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
        return json_object(response) if response.content else None

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
        return json_object(await self._send("GET", row_path(entity_set, row), params=params))

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
        return json_object(await self._send("GET", path, params=params))

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
            page = json_object(await self._send("GET", url, params=query, headers=headers))
            for row in page.get("value", []):
                yield row
            url = page.get("@odata.nextLink")
            query = None  # the next link carries the whole query
            if url is not None and not str(url).startswith(self.api_url):
                # Never follow a link elsewhere: the bearer token would go with it.
                raise DataverseError(
                    None,
                    "InvalidResponse",
                    "the @odata.nextLink of a page points outside the environment (its Web API)",
                    retryable=False,
                )

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

    def _write(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        options: RequestOptions | None,
        *,
        idempotent: bool,
        headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Awaitable[httpx.Response]:
        option_headers, tag_query = _prepared(options, self.options)
        all_headers = {**option_headers, **headers} if headers else dict(option_headers)
        content = None
        if body is not None:
            content = orjson.dumps(body, default=json_default)
            all_headers["Content-Type"] = _JSON
        return self._send(
            method,
            path,
            params=params,
            query=tag_query,
            headers=all_headers,
            content=content,
            idempotent=idempotent,
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        idempotent: bool = True,
    ) -> Awaitable[httpx.Response]:
        """The call to await. `query`: more of the query string, already encoded (the write
        tag). Plain functions returning the resender's coroutine, as `_write` is: each layer
        of coroutines is crossed again on every resumption of the request."""
        # The whole URL as text, parsed once by httpx (given a path and params, it parses
        # three times: a fifth of the client's CPU per request); the sender keeps the parsed
        # URLs that repeat.
        url = path if path.startswith(self.api_url) else self.api_url + path
        if params:
            query = urlencode(params) + ("&" + query if query else "")
        if query:
            url += ("&" if "?" in path else "?") + query

        def exchange(remaining: float) -> Awaitable[httpx.Response]:
            return self._http.send(
                method, url, headers=headers, content=content, phase_timeout=min(30.0, remaining)
            )

        return self._resender.send(exchange, method, path, idempotent=idempotent)

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


# Upsert modes and the preconditions that make them: none, refuse an existing row, refuse a new one.
_UPSERT_MODES: dict[str, dict[str, str]] = {
    "upsert": {},
    "create_only": {"If-None-Match": "*"},
    "update_only": {"If-Match": "*"},
}


@functools.lru_cache(maxsize=64)
def _prepared(
    options: RequestOptions | None, defaults: RequestOptions
) -> tuple[dict[str, str], str]:
    """The headers and the encoded `tag` query of a write's options over the client's: worked
    out once per set of options (most writes use the client's own). Callers copy the dict."""
    effective = (options or RequestOptions()).over(defaults)
    return effective.headers(), urlencode({"tag": effective.tag}) if effective.tag else ""


def _select(select: Sequence[str] | None) -> dict[str, str]:
    return {"$select": ",".join(select)} if select else {}
