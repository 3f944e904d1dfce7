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
- "Query table definitions using the Web API": `EntityDefinitions` by logical name.
Every request needs `Authorization: Bearer <token>` (401 without, or with a revoked token).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from shared.tables import table as table_spec
from tools.emulator.batch import run_batch
from tools.emulator.contexts import Identity
from tools.emulator.definitions import entity_definitions
from tools.emulator.faults import Fault, Faults, fault_error
from tools.emulator.flows import FlowRunner
from tools.emulator.limits import Refusal, ServiceProtection
from tools.emulator.posting import LocalBroker, Poster, Write
from tools.emulator.queries import navigate, query_rows, retrieve
from tools.emulator.schema import SchemaError, check_payload, check_query, check_select
from tools.emulator.store import DEFAULT_TABLES, Store, Table
from tools.emulator.wire import (
    API_PREFIX,
    BAD_REQUEST,
    DUPLICATE,
    GUID,
    NOT_FOUND,
    SEGMENT,
    SEGMENT_NOT_FOUND,
    VERSION_MISMATCH,
    RecordedRequest,
    Response,
    WebApiError,
    error_response,
    etag_of,
    json_body,
    json_response,
    parse_key,
    parse_literal,
    timestamp,
)


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
        limits: ServiceProtection | None = None,
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
        # Events posted for the steps registered through the Web API (tools/emulator/posting.py),
        # their system jobs and enqueued times by this clock (a drill moves it).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.poster = Poster(self)
        self.flows = FlowRunner(self)  # the cloud flows that publish rows (flows.py)
        self._pending: list[Write] = []
        self.actions: dict[str, Callable[..., Any]] = {}
        self.functions: dict[str, Callable[..., Any]] = {"WhoAmI": self._who_am_i}
        self.actions["TriggerServiceEndpointCheck"] = self._check_service_endpoint
        # Service endpoints (ids or names) Dataverse cannot reach: their check fails, and their
        # posts are left waiting.
        self.unreachable_endpoints: set[str] = set()
        self.faults = Faults(seed)
        # Service protection limits per user (tools/emulator/limits.py); None: unlimited.
        self.limits = limits
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
        self.faults.queue.append(Fault(status, count, retry_after, method, path_contains, delay))

    def clear_faults(self) -> None:
        """Forget the injected faults not yet served, and stop random ones."""
        self.faults.queue.clear()
        self.faults.rate = 0.0

    def random_faults(
        self, rate: float, statuses: tuple[int, ...] = (429, 503), retry_after: float = 1.0
    ) -> None:
        """Fail this share of requests at random (seeded) with one of `statuses`."""
        self.faults.rate = rate
        self.faults.statuses = statuses
        self.faults.retry_after = retry_after

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
            admitted = None
            try:
                self._authenticate(headers)
                admitted = self._admit(headers, path, body)
                if self.latency:  # the server's time on the request, while it is in flight
                    await asyncio.sleep(self.latency)
                fault = self.faults.next(method, path)
                if fault is not None:
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status is not None:
                        raise fault_error(fault.status, fault.retry_after)
                if not path.startswith(API_PREFIX):
                    raise WebApiError(404, SEGMENT_NOT_FOUND, f"No Web API at {path}")
                resource = unquote(path[len(API_PREFIX) :])
                query = dict(parse_qsl(query_string, keep_blank_values=True))
                self._pending.clear()
                if resource == "$batch" and method == "POST":
                    self._record(method, resource, query, headers, body, in_batch=False)
                    response = run_batch(self, headers, body)
                else:
                    response = self._dispatch(
                        method, resource, query, headers, body, {}, in_batch=False
                    )
                self._post_pending()
                return response
            except WebApiError as error:
                self._pending.clear()
                return error_response(error)
            finally:
                if admitted is not None and self.limits is not None:
                    self.limits.finish(*admitted)
        finally:
            self.in_flight -= 1

    def _admit(
        self, headers: Mapping[str, str], path: str, body: bytes
    ) -> tuple[str, int, Any] | None:
        """Count the request against its user's service protection limits, or refuse it."""
        if self.limits is None:
            return None
        user = str(self._identity(headers).system_user_id)
        operations = 1
        if path.endswith("$batch"):
            operations = max(1, body.count(b"Content-Type: application/http"))
        server = self.limits.server_for(user)
        admitted = self.limits.admit(user, server, operations)
        if isinstance(admitted, Refusal):
            retry = {"Retry-After": f"{admitted.retry_after:g}"}
            raise WebApiError(429, admitted.code, admitted.message, retry)
        return user, server, admitted

    def _post_pending(self) -> None:
        """Post the events of the writes that committed, once the request has succeeded."""
        writes, self._pending = self._pending, []
        for write in writes:
            self.poster.after_write(write)
            self.flows.after_write(write)

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
                self._identity(headers),
                query.get("tag") or None,
                dict(headers),
            )
        )

    # --- requests -------------------------------------------------------------------------------

    @staticmethod
    def _token(headers: Mapping[str, str]) -> str:
        authorization = headers.get("authorization", "")
        return authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""

    def _identity(self, headers: Mapping[str, str]) -> Identity:
        """Who the request runs as: the identity its bearer token names, or the default user."""
        return self.identities.get(self._token(headers), self.default_identity)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        token = self._token(headers)
        if not token or token in self.revoked_tokens or self.refuse_every_token:
            raise WebApiError(
                401,
                "0x80048306",
                "Authentication failed: bearer token missing or not valid",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

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
        match = SEGMENT.match(resource)
        if match is None:
            raise WebApiError(
                404, SEGMENT_NOT_FOUND, f"Resource not found for the segment '{resource}'."
            )
        name, key, rest = match.group("name"), match.group("key"), match.group("rest")
        if name == "EntityDefinitions" and method == "GET":
            metadata = f"{self.environment_url}{API_PREFIX}$metadata"
            return json_response(
                200, entity_definitions(self.tables.values(), key, rest, query, metadata)
            )
        table = self.tables.get(name)
        payload = json_body(body) if body else {}
        if table is None:
            return self._operation(method, name, key, query, payload, None)
        try:
            if method in ("POST", "PATCH") and not rest:
                check_payload(table, payload)
            if method == "GET" and key is None:
                check_query(table, query)
            elif method == "GET":
                check_select(table, query)
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
                return query_rows(self, table, query, headers, resource)
            raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on {name}")
        if rest:
            return navigate(self, method, table, key, rest, query, payload, references)
        if method == "GET":
            return retrieve(self, table, key, query)
        if method == "PATCH":
            return self._patch(table, key, payload, headers, references, query)
        if method == "DELETE":
            return self._delete(table, key, headers, query)
        raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on a row")

    # --- rows -----------------------------------------------------------------------------------

    def _find(self, table: Table, key: str) -> tuple[str, dict[str, Any], int] | None:
        """A row by `(guid)` or `(key='value',...)`: (id, data, version) or None."""
        if GUID.fullmatch(key):
            found = self.store.get(table.entity_set, key.lower())
            return None if found is None else (key.lower(), found[0], found[1])
        wanted = parse_key(key)
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
        match = SEGMENT.match(path.lstrip("/"))
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
        now = timestamp()
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
            row_id = key.lower() if GUID.fullmatch(key) else str(uuid.uuid4())
            if not GUID.fullmatch(key):
                data.update(parse_key(key))
            changes = dict(data)
            now = timestamp()
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
        if if_match not in (None, "*") and if_match != etag_of(version):
            raise WebApiError(
                412,
                VERSION_MISMATCH,
                "The version of the existing record doesn't "
                "match the RowVersion property provided.",
            )
        changes = self._write_only(table, self._apply_binds(payload, references))
        data.update(changes)
        data["modifiedon"] = timestamp()
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
        if if_match not in (None, "*") and if_match != etag_of(found[2]):
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
            "@odata.etag": etag_of(version),
        }
        for column, value in data.items():
            if "@" in column and not annotations:
                continue
            if select is None or column in select or column == table.primary_id:
                shown[column] = value
        return shown

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
                alias[1:]: parse_literal(value)
                for alias, value in query.items()
                if alias.startswith("@")
            }
            return json_response(200, self.functions[name](bound=bound, **parameters))
        if method == "POST" and name in self.actions:
            result = self.actions[name](bound=bound, **payload)
            return Response(204) if result is None else json_response(200, result)
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
        if {bound[1], found[0].get("name")} & self.unreachable_endpoints:  # by id or name
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


__all__ = ["API_PREFIX", "DataverseEmulator", "RecordedRequest", "Response"]
