"""`$batch`: up to 1,000 requests in one round trip, with change sets applied atomically
(Learn, "Execute batch operations using the Web API")."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import orjson

from shared.errors import DataverseError, InvalidResponse

from .addressing import RowAddress, id_from_entity_url, row_path
from .multipart import HttpPart, header, read_parts, write_batch
from .responses import error_from_parts, invalid_response, json_default

if TYPE_CHECKING:
    from .client import DataverseClient, RequestOptions

MAX_BATCH_REQUESTS = 1000  # Dataverse's limit per $batch
_JSON = "application/json; charset=utf-8"


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
        effective = self._client.effective_options(options)
        part_headers = dict(headers or {})
        url = path if path.startswith("$") else self._client.api_url + path
        if write:
            part_headers.update(effective.headers())
            if effective.tag:
                url += ("&" if "?" in url else "?") + str(httpx.QueryParams({"tag": effective.tag}))
        part = HttpPart(method=method, url=url, headers=part_headers)
        if body is not None:
            part.headers["Content-Type"] = _JSON
            part.body = orjson.dumps(body, default=json_default)
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
            raise invalid_response(
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
                error = error_from_parts(part.status, part.headers, parsed)
            results.append(BatchResult(part.status, part.headers, parsed, part.content_id, error))
        if not self.continue_on_error:
            for result in results:
                if result.error is not None:
                    raise result.error
        return results
