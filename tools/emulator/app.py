"""A Dataverse Web API emulator: an ASGI app for tests, the embedded demo and developers without
an environment at hand.

It follows Microsoft's documented behaviour (Microsoft Learn, Dataverse developer guide):
- "Create a table row using the Web API": POST answers 204 with `OData-EntityId`, or 201 with
  the row under `Prefer: return=representation`; `<nav>@odata.bind` sets lookups.
- "Update and delete table rows using the Web API": PATCH upserts; `If-Match: *` forbids the
  create (404), `If-None-Match: *` forbids the update (412); alternate-key addressing.
- "Perform conditional operations using the Web API": `If-Match: W/"<version>"` answers 412
  when the row changed.
- "Retrieve a table row" / "Query data using the Web API": `$select`, `$filter`, `$orderby`,
  `$top`, `$expand` of lookups, `Prefer: odata.maxpagesize` with `@odata.nextLink`; FetchXML.
- "Associate and disassociate table rows": `<nav>/$ref`.
- "Execute batch operations using the Web API": multipart `$batch`, change sets that roll back
  as a whole, `Content-ID` references (`$1`), `Prefer: odata.continue-on-error`.
- "Service protection API limits": 429 with `Retry-After` and error code 0x80072322.
- "Compose HTTP requests and handle errors": `{"error": {"code", "message"}}` bodies.
- "Compose a query with optional parameters": the `tag` parameter is recorded per request.
Every request needs `Authorization: Bearer <token>` (401 without, or with a revoked token).
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import orjson

from shared.dataverse.multipart import HttpPart, header, read_parts
from shared.tables import table as table_spec
from tools.emulator.contexts import Identity
from tools.emulator.odata import QueryError, order_key, parse_fetch, parse_filter, sort_rows
from tools.emulator.posting import LocalBroker, Poster, Write
from tools.emulator.schema import SchemaError, check_columns, check_payload, check_query
from tools.emulator.store import DEFAULT_TABLES, Store, Table

API_PREFIX = "/api/data/v9.2/"
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SEGMENT = re.compile(r"^(?P<name>[A-Za-z_$][\w.]*)(?:\((?P<key>[^)]*)\))?(?:/(?P<rest>.*))?$")

# Dataverse error codes the emulator answers with.
NOT_FOUND = "0x80040217"  # ObjectDoesNotExist
SEGMENT_NOT_FOUND = "0x8006088a"  # Resource not found for the segment (Learn)
VERSION_MISMATCH = "0x80060882"  # ConcurrencyVersionMismatch
DUPLICATE = "0x80040237"  # DuplicateRecord
BAD_REQUEST = "0x80048d19"
THROTTLED = "0x80072322"  # number of requests exceeded the limit
UNAVAILABLE = "0x80040216"


class WebApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # below /api/data/v9.2/
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    in_batch: bool

    @property
    def tag(self) -> str | None:
        return self.query.get("tag")


@dataclass
class Fault:
    status: int | None
    count: int
    retry_after: float | None
    method: str | None
    path_contains: str | None
    delay: float


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class DataverseEmulator:
    """The ASGI app (the instance is callable) plus handles for tests: `requests` (the log),
    `inject()` and `random_faults()` (failures on demand), `latency` (seconds per request),
    `revoke()` (tokens to answer 401), `rows()` (what is stored), `actions` / `functions`."""

    def __init__(
        self,
        *,
        database: str = ":memory:",
        tables: tuple[Table, ...] = DEFAULT_TABLES,
        environment_url: str = "https://contoso.crm.dynamics.com",
        latency: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.store = Store(database)
        self.tables = {table.entity_set: table for table in tables}
        self.environment_url = environment_url.rstrip("/")
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self.revoked_tokens: set[str] = set()
        # The application user is disabled or deleted: every token, new ones too, gets 401.
        self.refuse_every_token = False
        self.organization_id = uuid.UUID("0f000000-0000-4000-8000-0000000000aa")
        self.organization_name = "contoso"
        self.user_id = uuid.UUID("5e000000-0000-4000-8000-0000000000ee")
        self.business_unit_id = uuid.UUID("0a1b2c3d-0000-4000-8000-000000000001")
        # Who each bearer token is; any other token is this default user.
        self.default_identity = Identity(
            self.user_id, uuid.UUID("0b000000-0000-4000-8000-0000000000ee"), "Emulator User"
        )
        self.identities: dict[str, Identity] = {}
        # Events posted for the steps registered through the Web API (tools/emulator/posting.py).
        self.poster = Poster(self)
        self._pending: list[Write] = []
        self.actions: dict[str, Callable[..., Any]] = {}
        self.functions: dict[str, Callable[..., Any]] = {"WhoAmI": self._who_am_i}
        self.actions["TriggerServiceEndpointCheck"] = self._check_service_endpoint
        # Service endpoints whose check fails as Dataverse reports an unreachable namespace.
        self.unreachable_endpoints: set[str] = set()
        self._faults: deque[Fault] = deque()
        self._fault_rate = 0.0
        self._fault_statuses: tuple[int, ...] = (429, 503)
        self._fault_retry_after = 1.0
        self._random = random.Random(seed)
        self.in_flight = 0
        self.most_in_flight = 0

    # --- test handles ---------------------------------------------------------------------------

    def add_table(
        self,
        logical_name: str,
        entity_set: str | None = None,
        primary_id: str | None = None,
        alternate_keys: tuple[tuple[str, ...], ...] = (),
        *,
        columns: tuple[str, ...] | None = None,
        lookups: Mapping[str, tuple[str, ...]] | None = None,
        primary_name: str | None = None,
    ) -> Table:
        """Serve another table (as tables.toml would): without `columns`, any column goes."""
        table = table_spec(
            logical_name,
            entity_set=entity_set,
            primary_id=primary_id,
            alternate_keys=alternate_keys,
            columns=columns,
            lookups=dict(lookups or {}),
            primary_name=primary_name,
        )
        self.tables[table.entity_set] = table
        return table

    def inject(
        self,
        status: int | None,
        *,
        count: int = 1,
        retry_after: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `count` matching requests wait `delay` seconds, then fail with `status`,
        or, with `status=None`, are processed normally (a slow Dataverse)."""
        self._faults.append(Fault(status, count, retry_after, method, path_contains, delay))

    def clear_faults(self) -> None:
        """Forget the injected faults not yet served, and stop random ones."""
        self._faults.clear()
        self._fault_rate = 0.0

    def random_faults(
        self, rate: float, statuses: tuple[int, ...] = (429, 503), retry_after: float = 1.0
    ) -> None:
        """Fail this share of requests at random (seeded) with one of `statuses`."""
        self._fault_rate = rate
        self._fault_statuses = statuses
        self._fault_retry_after = retry_after

    def revoke(self, token: str) -> None:
        self.revoked_tokens.add(token)

    def add_identity(self, token: str, name: str, object_id: uuid.UUID | None = None) -> Identity:
        """A user whose requests carry `token`: a systemuser row and an Entra object id, which
        the contexts posted for its writes name as user and initiating user."""
        identity = Identity(uuid.uuid4(), object_id or uuid.uuid4(), name)
        self.identities[token] = identity
        row = {
            "systemuserid": str(identity.system_user_id),
            "fullname": name,
            "azureactivedirectoryobjectid": str(identity.object_id),
        }
        self.store.put("systemusers", str(identity.system_user_id), row)
        return identity

    @property
    def broker(self) -> LocalBroker:
        """The queues the emulator posts events to, one per service endpoint path."""
        return self.poster.broker

    def rows(self, entity_set: str) -> list[dict[str, Any]]:
        return [data for data, _ in self.store.all(entity_set)]

    def writes(self) -> list[RecordedRequest]:
        return [
            request
            for request in self.requests
            if request.method != "GET" and request.path != "$batch"
        ]

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        response = await self.handle(
            scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (name.encode(), value.encode()) for name, value in response.headers.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def handle(
        self, method: str, path: str, query_string: str, headers: dict[str, str], body: bytes
    ) -> Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            try:
                self._authenticate(headers)
                fault = self._next_fault(method, path)
                if fault is not None:
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status is not None:
                        raise self._fault_error(fault.status, fault.retry_after)
                if not path.startswith(API_PREFIX):
                    raise WebApiError(404, SEGMENT_NOT_FOUND, f"No Web API at {path}")
                resource = unquote(path[len(API_PREFIX) :])
                query = dict(parse_qsl(query_string, keep_blank_values=True))
                self._pending.clear()
                if resource == "$batch" and method == "POST":
                    self._record(method, resource, query, headers, body, in_batch=False)
                    response = self._batch(headers, body)
                else:
                    response = self._dispatch(
                        method, resource, query, headers, body, {}, in_batch=False
                    )
                self._post_pending()
                return response
            except WebApiError as error:
                self._pending.clear()
                return _error_response(error)
        finally:
            self.in_flight -= 1

    def _post_pending(self) -> None:
        """Post the events of the writes that committed, once the request has succeeded."""
        writes, self._pending = self._pending, []
        for write in writes:
            self.poster.after_write(write)

    def _wrote(
        self,
        message: str,
        table: Table,
        row_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        version: int | None,
        changes: Mapping[str, Any],
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> None:
        token = headers.get("authorization", "")[7:].strip()
        changed = frozenset(
            key[1:-6] if key.startswith("_") and key.endswith("_value") else key
            for key in changes
            if "@" not in key
        )
        self._pending.append(
            Write(
                message,
                table,
                row_id,
                None if before is None else dict(before),
                None if after is None else dict(after),
                version,
                changed,
                self.identities.get(token, self.default_identity),
                query.get("tag") or None,
                dict(headers),
            )
        )

    # --- requests -------------------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        authorization = headers.get("authorization", "")
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if not token or token in self.revoked_tokens or self.refuse_every_token:
            raise WebApiError(
                401,
                "0x80048306",
                "Authentication failed: bearer token missing or not valid",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    def _next_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if (fault.method is None or fault.method == method) and (
                fault.path_contains is None or fault.path_contains in path
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        if self._fault_rate and self._random.random() < self._fault_rate:
            status = self._random.choice(self._fault_statuses)
            return Fault(status, 1, self._fault_retry_after, None, None, 0.0)
        return None

    @staticmethod
    def _fault_error(status: int, retry_after: float | None) -> WebApiError:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        if status == 429:
            return WebApiError(
                429,
                THROTTLED,
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                headers,
            )
        if status == 503:
            return WebApiError(503, UNAVAILABLE, "The service is temporarily unavailable.", headers)
        return WebApiError(status, BAD_REQUEST, f"Injected failure {status}", headers)

    def _record(
        self,
        method: str,
        resource: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        in_batch: bool,
    ) -> None:
        self.requests.append(
            RecordedRequest(method, resource, query, dict(headers), body, in_batch)
        )

    def _dispatch(
        self,
        method: str,
        resource: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        references: dict[str, tuple[str, str]],
        *,
        in_batch: bool,
    ) -> Response:
        self._record(method, resource, query, headers, body, in_batch=in_batch)
        if resource.startswith("$"):
            name, _, rest = resource.partition("/")
            if name not in references:
                raise WebApiError(400, BAD_REQUEST, f"Content-ID reference {name} is unknown")
            entity_set, row_id = references[name]
            resource = f"{entity_set}({row_id})" + (f"/{rest}" if rest else "")
        match = _SEGMENT.match(resource)
        if match is None:
            raise WebApiError(
                404, SEGMENT_NOT_FOUND, f"Resource not found for the segment '{resource}'."
            )
        name, key, rest = match.group("name"), match.group("key"), match.group("rest")
        table = self.tables.get(name)
        payload = _json_body(body) if body else {}
        if table is None:
            return self._operation(method, name, key, query, payload, None)
        try:
            if method in ("POST", "PATCH") and not rest:
                check_payload(table, payload)
            if method == "GET" and key is None:
                check_query(table, query)
            elif method == "GET" and query.get("$select"):
                check_columns(table, (c.strip() for c in query["$select"].split(",")))
        except SchemaError as error:
            raise WebApiError(400, error.code, error.message) from None
        if key is None:
            if rest == "$count" and method == "GET":
                # GET <entity set>/$count: the number of rows as text (at most 5,000).
                count = min(len(self.store.all(table.entity_set)), 5000)
                return Response(200, {"Content-Type": "text/plain"}, str(count).encode())
            if rest:
                raise WebApiError(
                    404, SEGMENT_NOT_FOUND, f"Resource not found for the segment '{rest}'."
                )
            if method == "POST":
                return self._create(table, payload, headers, references, query)
            if method == "GET":
                return self._query(table, query, headers, resource)
            raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on {name}")
        if rest:
            return self._navigate(method, table, key, rest, query, payload, references)
        if method == "GET":
            return self._retrieve(table, key, query)
        if method == "PATCH":
            return self._patch(table, key, payload, headers, references, query)
        if method == "DELETE":
            return self._delete(table, key, headers, query)
        raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on a row")

    # --- rows -----------------------------------------------------------------------------------

    def _find(self, table: Table, key: str) -> tuple[str, dict[str, Any], int] | None:
        """A row by `(guid)` or `(key='value',...)`: (id, data, version) or None."""
        if _GUID.fullmatch(key):
            found = self.store.get(table.entity_set, key.lower())
            return None if found is None else (key.lower(), found[0], found[1])
        wanted = _parse_key(key)
        if table.alternate_keys and tuple(sorted(wanted)) not in {
            tuple(sorted(columns)) for columns in table.alternate_keys
        }:
            raise WebApiError(
                400,
                BAD_REQUEST,
                f"No alternate key of {table.logical_name} has "
                f"the columns {', '.join(sorted(wanted))}",
            )
        for data, version in self.store.matching(table.entity_set, wanted, table.alternate_keys):
            return data[table.primary_id], data, version
        return None

    def _not_found(self, table: Table, key: str) -> WebApiError:
        return WebApiError(404, NOT_FOUND, f"{table.logical_name} With Ids = {key} Does Not Exist")

    @staticmethod
    def _write_only(table: Table, data: dict[str, Any]) -> dict[str, Any]:
        """Secrets Dataverse accepts but never returns: a service endpoint's SAS key and token
        set the read-only flags `issaskeyset` / `issastokenset` instead of being stored."""
        if table.logical_name == "serviceendpoint":
            for secret, flag in (("saskey", "issaskeyset"), ("sastoken", "issastokenset")):
                if secret in data:
                    data[flag] = bool(data.pop(secret))
        return data

    def _apply_binds(
        self, payload: dict[str, Any], references: Mapping[str, tuple[str, str]]
    ) -> dict[str, Any]:
        """`nav@odata.bind: "/accounts(<id>)"` becomes the lookup column `_nav_value`."""
        changes: dict[str, Any] = {}
        for name, value in payload.items():
            if not name.endswith("@odata.bind"):
                changes[name] = value
                continue
            navigation = name[: -len("@odata.bind")]
            target_set, target_id = self._resolve_url(str(value), references)
            target_table = self.tables[target_set]
            cut = navigation.find("_" + target_table.logical_name)
            column = navigation[:cut] if cut > 0 else navigation
            changes[f"_{column}_value"] = target_id
            changes[f"_{column}_value@Microsoft.Dynamics.CRM.lookuplogicalname"] = (
                target_table.logical_name
            )
        return changes

    def _resolve_url(self, url: str, references: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
        if url in references:
            return references[url]
        path = urlsplit(url).path
        if API_PREFIX in path:
            path = path.split(API_PREFIX, 1)[1]
        match = _SEGMENT.match(path.lstrip("/"))
        if match is None or match.group("name") not in self.tables or not match.group("key"):
            raise WebApiError(400, BAD_REQUEST, f"Cannot resolve the reference {url!r}")
        table = self.tables[match.group("name")]
        found = self._find(table, match.group("key"))
        if found is None:
            raise self._not_found(table, match.group("key"))
        return table.entity_set, found[0]

    def _check_unique_keys(self, table: Table, data: Mapping[str, Any], row_id: str) -> None:
        for columns in table.alternate_keys:
            if any(data.get(column) is None for column in columns):
                continue
            wanted = {column: data[column] for column in columns}
            for other, _ in self.store.matching(table.entity_set, wanted, table.alternate_keys):
                if other[table.primary_id] != row_id:
                    raise WebApiError(
                        412, DUPLICATE, "A record with matching key values already exists."
                    )

    def _create(
        self,
        table: Table,
        payload: dict[str, Any],
        headers: Mapping[str, str],
        references: dict[str, tuple[str, str]],
        query: Mapping[str, str] | None = None,
    ) -> Response:
        data = self._write_only(table, self._apply_binds(payload, references))
        changes = dict(data)
        row_id = str(data.get(table.primary_id) or uuid.uuid4()).lower()
        if self.store.get(table.entity_set, row_id) is not None:
            raise WebApiError(412, DUPLICATE, "A record with matching key values already exists.")
        now = _now()
        data.update({table.primary_id: row_id, "createdon": now, "modifiedon": now})
        data.setdefault("statecode", 0)  # a new row is active, as in Dataverse
        data.setdefault("statuscode", 1)
        self._check_unique_keys(table, data, row_id)
        version = self.store.put(table.entity_set, row_id, data, table.alternate_keys)
        self._wrote("Create", table, row_id, None, data, version, changes, headers, query or {})
        return self._written(table, row_id, data, version, headers, created=True)

    def _written(
        self,
        table: Table,
        row_id: str,
        data: dict[str, Any],
        version: int,
        headers: Mapping[str, str],
        *,
        created: bool,
    ) -> Response:
        location = f"{self.environment_url}{API_PREFIX}{table.entity_set}({row_id})"
        response_headers = {"OData-EntityId": location, "OData-Version": "4.0"}
        if "return=representation" in headers.get("prefer", ""):
            response_headers["Content-Type"] = "application/json; odata.metadata=minimal"
            body = self._representation(table, data, version, None)
            return Response(201 if created else 200, response_headers, orjson.dumps(body))
        return Response(204, response_headers)

    def _patch(
        self,
        table: Table,
        key: str,
        payload: dict[str, Any],
        headers: Mapping[str, str],
        references: dict[str, tuple[str, str]],
        query: Mapping[str, str] | None = None,
    ) -> Response:
        query = query or {}
        found = self._find(table, key)
        if_match = headers.get("if-match")
        if_none_match = headers.get("if-none-match")
        if found is None:
            if if_match is not None:
                raise self._not_found(table, key)
            data = self._write_only(table, self._apply_binds(payload, references))
            row_id = key.lower() if _GUID.fullmatch(key) else str(uuid.uuid4())
            if not _GUID.fullmatch(key):
                data.update(_parse_key(key))
            changes = dict(data)
            now = _now()
            data.update({table.primary_id: row_id, "createdon": now, "modifiedon": now})
            data.setdefault("statecode", 0)
            data.setdefault("statuscode", 1)
            self._check_unique_keys(table, data, row_id)
            version = self.store.put(table.entity_set, row_id, data, table.alternate_keys)
            self._wrote("Create", table, row_id, None, data, version, changes, headers, query)
            return self._written(table, row_id, data, version, headers, created=True)
        row_id, data, version = found
        before = dict(data)
        if if_none_match == "*":
            raise WebApiError(412, DUPLICATE, "A record with matching key values already exists.")
        if if_match not in (None, "*") and if_match != _etag(version):
            raise WebApiError(
                412,
                VERSION_MISMATCH,
                "The version of the existing record doesn't "
                "match the RowVersion property provided.",
            )
        changes = self._write_only(table, self._apply_binds(payload, references))
        data.update(changes)
        data["modifiedon"] = _now()
        self._check_unique_keys(table, data, row_id)
        version = self.store.put(table.entity_set, row_id, data, table.alternate_keys)
        self._wrote("Update", table, row_id, before, data, version, changes, headers, query)
        return self._written(table, row_id, data, version, headers, created=False)

    def _delete(
        self,
        table: Table,
        key: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
    ) -> Response:
        found = self._find(table, key)
        if found is None:
            raise self._not_found(table, key)
        if_match = headers.get("if-match")
        if if_match not in (None, "*") and if_match != _etag(found[2]):
            raise WebApiError(
                412,
                VERSION_MISMATCH,
                "The version of the existing record doesn't "
                "match the RowVersion property provided.",
            )
        self.store.delete(table.entity_set, found[0])
        self._wrote("Delete", table, found[0], found[1], None, None, {}, headers, query or {})
        return Response(204)

    def _representation(
        self,
        table: Table,
        data: Mapping[str, Any],
        version: int,
        select: list[str] | None,
        annotations: bool = False,
    ) -> dict[str, Any]:
        metadata = f"{self.environment_url}{API_PREFIX}$metadata"
        shown: dict[str, Any] = {
            "@odata.context": f"{metadata}#{table.entity_set}/$entity",
            "@odata.etag": _etag(version),
        }
        for column, value in data.items():
            if "@" in column and not annotations:
                continue
            if select is None or column in select or column == table.primary_id:
                shown[column] = value
        return shown

    def _retrieve(self, table: Table, key: str, query: Mapping[str, str]) -> Response:
        found = self._find(table, key)
        if found is None:
            raise self._not_found(table, key)
        _, data, version = found
        shown = self._representation(table, data, version, _columns(query.get("$select")))
        self._expand(shown, data, query.get("$expand", ""))
        return _json_response(200, shown)

    def _expand(self, shown: dict[str, Any], data: Mapping[str, Any], expand: str) -> None:
        """Single-valued navigation properties (lookups) named in `$expand`, each with its own
        `$select`: the related row, or null."""
        for expansion in _split_top_level(expand):
            name, _, options = expansion.partition("(")
            # A polymorphic lookup's navigation names its target: parentcustomerid_account.
            column = name if f"_{name}_value" in data else name.rpartition("_")[0]
            target_id = data.get(f"_{column}_value")
            logical = data.get(f"_{column}_value@Microsoft.Dynamics.CRM.lookuplogicalname")
            if column != name and not name.endswith("_" + str(logical)):
                target_id = None  # the lookup points at another table: null, as Dataverse
            target_table = next(
                (t for t in self.tables.values() if t.logical_name == logical), None
            )
            related = None
            if target_id and target_table is not None:
                found_related = self.store.get(target_table.entity_set, target_id)
                if found_related is not None:
                    inner = dict(parse_qsl(options.rstrip(")").replace(";", "&")))
                    related = self._representation(
                        target_table,
                        found_related[0],
                        found_related[1],
                        _columns(inner.get("$select")),
                    )
                    related.pop("@odata.context", None)
            shown[name] = related

    def _query(
        self, table: Table, query: Mapping[str, str], headers: Mapping[str, str], resource: str
    ) -> Response:
        try:
            if "fetchXml" in query:
                logical, select, predicate, ordering, top = parse_fetch(query["fetchXml"])
                if logical != table.logical_name:
                    raise QueryError(f"FetchXML queries {logical}, not {table.logical_name}")
            else:
                select = _columns(query.get("$select"))
                predicate = (
                    parse_filter(query["$filter"]) if query.get("$filter") else (lambda _: True)
                )
                ordering = order_key(query["$orderby"]) if query.get("$orderby") else []
                top = int(query["$top"]) if query.get("$top") else None
        except (QueryError, ValueError) as error:
            raise WebApiError(400, BAD_REQUEST, str(error)) from None
        rows = [
            (data, version) for data, version in self.store.all(table.entity_set) if predicate(data)
        ]
        if ordering:
            order = {id(data): version for data, version in rows}
            sorted_rows = sort_rows([data for data, _ in rows], ordering)
            rows = [(data, order[id(data)]) for data in sorted_rows]
        matched = len(rows)
        if top is not None:
            rows = rows[:top]
        page_size = _max_page_size(headers)
        start = int(query.get("$skiptoken", "0") or 0)
        end = len(rows) if page_size is None else start + page_size
        values = []
        for data, version in rows[start:end]:
            shown = _without_context(self._representation(table, data, version, select))
            if query.get("$expand"):
                self._expand(shown, data, query["$expand"])
            values.append(shown)
        body: dict[str, Any] = {
            "@odata.context": f"{self.environment_url}{API_PREFIX}$metadata#{table.entity_set}"
        }
        if query.get("$count") == "true":
            # The rows matching the filter, not just this page, at most 5,000 (Learn).
            body["@odata.count"] = min(matched, 5000)
        body["value"] = values
        response_headers = {}
        if page_size is not None:
            response_headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
            if end < len(rows):
                following = {**query, "$skiptoken": str(end)}
                encoded = "&".join(f"{k}={quote(v, safe='')}" for k, v in following.items())
                body["@odata.nextLink"] = f"{self.environment_url}{API_PREFIX}{resource}?{encoded}"
        response = _json_response(200, body)
        response.headers.update(response_headers)
        return response

    def _navigate(
        self,
        method: str,
        table: Table,
        key: str,
        rest: str,
        query: Mapping[str, str],
        payload: dict[str, Any],
        references: dict[str, tuple[str, str]],
    ) -> Response:
        found = self._find(table, key)
        if found is None:
            raise self._not_found(table, key)
        row_id = found[0]
        if rest.startswith("Microsoft.Dynamics.CRM."):
            operation = rest[len("Microsoft.Dynamics.CRM.") :]
            name, _, inner = operation.partition("(")
            return self._operation(
                method, name, inner.rstrip(")") or None, query, payload, (table.entity_set, row_id)
            )
        navigation, target, ref = _parse_navigation(rest)
        if ref and method == "POST":
            target_set, target_id = self._resolve_url(str(payload.get("@odata.id", "")), references)
            self.store.link(table.entity_set, row_id, navigation, target_set, target_id)
            return Response(204)
        if ref and method == "DELETE":
            data = found[1]
            if target is None and f"_{navigation}_value" in data:
                data[f"_{navigation}_value"] = None
                self.store.put(table.entity_set, row_id, data, table.alternate_keys)
                return Response(204)
            self.store.unlink(
                table.entity_set, row_id, navigation, target.lower() if target else None
            )
            return Response(204)
        if not ref and method == "GET":
            related = []
            for target_set, target_id in self.store.linked(table.entity_set, row_id, navigation):
                stored = self.store.get(target_set, target_id)
                if stored is not None:
                    related.append(
                        self._representation(
                            self.tables[target_set],
                            stored[0],
                            stored[1],
                            _columns(query.get("$select")),
                        )
                    )
            return _json_response(200, {"value": related})
        raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on {rest}")

    # --- actions, functions, $batch -------------------------------------------------------------

    def _operation(
        self,
        method: str,
        name: str,
        key: str | None,
        query: Mapping[str, str],
        payload: dict[str, Any],
        bound: tuple[str, str] | None,
    ) -> Response:
        if method == "GET" and name in self.functions:
            parameters = {
                alias[1:]: _parse_literal(value)
                for alias, value in query.items()
                if alias.startswith("@")
            }
            return _json_response(200, self.functions[name](bound=bound, **parameters))
        if method == "POST" and name in self.actions:
            result = self.actions[name](bound=bound, **payload)
            return Response(204) if result is None else _json_response(200, result)
        raise WebApiError(404, SEGMENT_NOT_FOUND, f"Resource not found for the segment '{name}'.")

    def _check_service_endpoint(self, bound: tuple[str, str] | None = None) -> None:
        if bound is None or bound[0] != "serviceendpoints":
            raise WebApiError(
                400, BAD_REQUEST, "TriggerServiceEndpointCheck is bound to a serviceendpoint"
            )
        found = self.store.get(*bound)
        if found is None:
            raise WebApiError(
                404, NOT_FOUND, f"serviceendpoint With Ids = {bound[1]} Does Not Exist"
            )
        if not found[0].get("issaskeyset"):
            raise WebApiError(
                400, BAD_REQUEST, "The service endpoint has no SAS key: posting fails"
            )
        if bound[1] in self.unreachable_endpoints:
            raise WebApiError(
                400,
                BAD_REQUEST,
                "The remote service endpoint could not be reached: "
                "401 Unauthorized (the SAS key was rejected)",
            )

    def seed_sdk_messages(self, messages: dict[str, list[str]]) -> dict[str, str]:
        """Create sdkmessage rows and, per message, sdkmessagefilter rows for the given tables,
        as every environment has them; returns message name -> id."""
        ids = {}
        for message, entities in messages.items():
            message_id = str(uuid.uuid4())
            self.store.put("sdkmessages", message_id, {"sdkmessageid": message_id, "name": message})
            ids[message] = message_id
            for entity in entities:
                filter_id = str(uuid.uuid4())
                self.store.put(
                    "sdkmessagefilters",
                    filter_id,
                    {
                        "sdkmessagefilterid": filter_id,
                        "primaryobjecttypecode": entity,
                        "_sdkmessageid_value": message_id,
                    },
                )
        return ids

    def _who_am_i(self, bound: tuple[str, str] | None = None) -> dict[str, Any]:
        return {
            "BusinessUnitId": str(self.business_unit_id),
            "UserId": str(self.user_id),
            "OrganizationId": str(self.organization_id),
        }

    def _batch(self, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            parts = read_parts(headers.get("content-type", ""), body, responses=False)
        except ValueError as error:
            raise WebApiError(
                400, BAD_REQUEST, f"The $batch body is not readable: {error}"
            ) from None
        continue_on_error = "odata.continue-on-error" in headers.get("prefer", "")
        inherited = {"authorization": headers.get("authorization", "")}
        boundary = f"batchresponse_{uuid.uuid4()}"
        chunks: list[bytes] = []
        index = 0
        while index < len(parts):
            changeset = parts[index].changeset
            if changeset is None:
                response = self._inner(parts[index], inherited, {})
                chunk, failed = _http_part(response, None), response.status >= 400
                index += 1
            else:
                group = []
                while index < len(parts) and parts[index].changeset == changeset:
                    group.append(parts[index])
                    index += 1
                chunk, failed = self._changeset(group, inherited)
            chunks.append(chunk)
            if failed and not continue_on_error:
                break
        out = b"".join(b"--" + boundary.encode() + b"\r\n" + chunk for chunk in chunks)
        out += b"--" + boundary.encode() + b"--\r\n"
        response_headers = {
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "OData-Version": "4.0",
        }
        if continue_on_error:
            response_headers["Preference-Applied"] = "odata.continue-on-error"
        return Response(200, response_headers, out)

    def _changeset(
        self, requests: list[HttpPart], inherited: Mapping[str, str]
    ) -> tuple[bytes, bool]:
        references: dict[str, tuple[str, str]] = {}
        responses: list[tuple[Response, str | None]] = []
        pending = len(self._pending)
        try:
            with self.store.atomic():
                for request in requests:
                    response = self._inner(request, inherited, references)
                    if response.status >= 400:
                        raise _ChangesetFailed(response)
                    location = response.headers.get("OData-EntityId", "")
                    match = _SEGMENT.match(location.split(API_PREFIX)[-1]) if location else None
                    if request.content_id and match and match.group("key"):
                        references["$" + request.content_id] = (
                            match.group("name"),
                            match.group("key"),
                        )
                    responses.append((response, request.content_id))
        except _ChangesetFailed as failure:
            del self._pending[pending:]  # rolled back: nothing of it is posted
            return _http_part(failure.response, None), True
        boundary = f"changesetresponse_{uuid.uuid4()}"
        inner_chunks = b"".join(
            b"--" + boundary.encode() + b"\r\n" + _http_part(response, content_id)
            for response, content_id in responses
        )
        head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        return head + inner_chunks + b"--" + boundary.encode() + b"--\r\n", False

    def _inner(
        self,
        request: HttpPart,
        inherited: Mapping[str, str],
        references: dict[str, tuple[str, str]],
    ) -> Response:
        headers = {**inherited, **{name.lower(): value for name, value in request.headers.items()}}
        split = urlsplit(request.url)
        path = unquote(split.path)
        resource = path.split(API_PREFIX, 1)[1] if API_PREFIX in path else path.lstrip("/")
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            return self._dispatch(
                request.method, resource, query, headers, request.body, references, in_batch=True
            )
        except WebApiError as error:
            return _error_response(error)


class _ChangesetFailed(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# --- helpers ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        loaded = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise WebApiError(
            400, BAD_REQUEST, f"The request body is not valid JSON: {error}"
        ) from None
    if not isinstance(loaded, dict):
        raise WebApiError(400, BAD_REQUEST, "The request body must be a JSON object")
    return loaded


def _json_response(status: int, body: Any) -> Response:
    return Response(
        status,
        {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"},
        orjson.dumps(body),
    )


def _error_response(error: WebApiError) -> Response:
    request_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "x-ms-service-request-id": request_id,
        "REQ_ID": request_id,
        **error.headers,
    }
    body = {"error": {"code": error.code, "message": error.message}}
    return Response(error.status, headers, orjson.dumps(body))


def _http_part(response: Response, content_id: str | None) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + response.body + b"\r\n"


def _parse_literal(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw in ("true", "false"):
        return raw == "true"
    if raw == "null":
        return None
    if _GUID.fullmatch(raw):
        return raw.lower()
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw


def _parse_key(key: str) -> dict[str, Any]:
    """`name='a',number=2` -> {"name": "a", "number": 2} (commas inside quotes allowed)."""
    found: dict[str, Any] = {}
    for part in _split_top_level(key):
        column, _, value = part.partition("=")
        if not column or not value:
            raise WebApiError(400, BAD_REQUEST, f"Cannot read the key '{key}'")
        found[column.strip()] = _parse_literal(value)
    return found


def _split_top_level(text: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _columns(select: str | None) -> list[str] | None:
    return [column.strip() for column in select.split(",")] if select else None


def _max_page_size(headers: Mapping[str, str]) -> int | None:
    match = re.search(r"odata\.maxpagesize=(\d+)", headers.get("prefer", ""))
    return int(match.group(1)) if match else None


def _without_context(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("@odata.context", None)
    return row


def _parse_navigation(rest: str) -> tuple[str, str | None, bool]:
    """`nav/$ref` -> (nav, None, True); `nav(<id>)/$ref` -> (nav, id, True);
    `nav` -> (nav, None, False)."""
    ref = rest.endswith("/$ref")
    if ref:
        rest = rest[: -len("/$ref")]
    name, _, inner = rest.partition("(")
    return name, inner.rstrip(")") or None, ref


__all__ = ["API_PREFIX", "DataverseEmulator", "RecordedRequest", "Response", "header"]
