"""Reading rows: retrieve by key, `$expand` of lookups, collection queries (`$select`,
`$filter`, `$orderby`, `$top`, `$count`, FetchXML, paging with `odata.maxpagesize` and
`@odata.nextLink`) and navigation properties (`$ref` associations, related rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from tools.emulator.odata import QueryError, order_key, parse_fetch, parse_filter, sort_rows
from tools.emulator.wire import (
    API_PREFIX,
    BAD_REQUEST,
    Response,
    WebApiError,
    json_response,
    max_page_size,
    parse_navigation,
    select_columns,
    split_top_level,
    without_context,
)

if TYPE_CHECKING:
    from tools.emulator.app import DataverseEmulator
    from tools.emulator.store import Table


def retrieve(
    emulator: DataverseEmulator, table: Table, key: str, query: Mapping[str, str]
) -> Response:
    found = emulator._find(table, key)
    if found is None:
        raise emulator._not_found(table, key)
    _, data, version = found
    shown = emulator._representation(table, data, version, select_columns(query.get("$select")))
    expand(emulator, shown, data, query.get("$expand", ""))
    return json_response(200, shown)


def expand(
    emulator: DataverseEmulator, shown: dict[str, Any], data: Mapping[str, Any], option: str
) -> None:
    """Single-valued navigation properties (lookups) named in `$expand`, each with its own
    `$select`: the related row, or null."""
    for expansion in split_top_level(option):
        name, _, options = expansion.partition("(")
        # A polymorphic lookup's navigation names its target: parentcustomerid_account.
        column = name if f"_{name}_value" in data else name.rpartition("_")[0]
        target_id = data.get(f"_{column}_value")
        logical = data.get(f"_{column}_value@Microsoft.Dynamics.CRM.lookuplogicalname")
        if column != name and not name.endswith("_" + str(logical)):
            target_id = None  # the lookup points at another table: null, as Dataverse
        target_table = next(
            (t for t in emulator.tables.values() if t.logical_name == logical), None
        )
        related = None
        if target_id and target_table is not None:
            found_related = emulator.store.get(target_table.entity_set, target_id)
            if found_related is not None:
                inner = dict(parse_qsl(options.rstrip(")").replace(";", "&")))
                related = emulator._representation(
                    target_table,
                    found_related[0],
                    found_related[1],
                    select_columns(inner.get("$select")),
                )
                related.pop("@odata.context", None)
        shown[name] = related


def query_rows(
    emulator: DataverseEmulator,
    table: Table,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    resource: str,
) -> Response:
    try:
        if "fetchXml" in query:
            logical, select, predicate, ordering, top = parse_fetch(query["fetchXml"])
            if logical != table.logical_name:
                raise QueryError(f"FetchXML queries {logical}, not {table.logical_name}")
        else:
            select = select_columns(query.get("$select"))
            predicate = parse_filter(query["$filter"]) if query.get("$filter") else (lambda _: True)
            ordering = order_key(query["$orderby"]) if query.get("$orderby") else []
            top = int(query["$top"]) if query.get("$top") else None
    except (QueryError, ValueError) as error:
        raise WebApiError(400, BAD_REQUEST, str(error)) from None
    rows = [
        (data, version) for data, version in emulator.store.all(table.entity_set) if predicate(data)
    ]
    if ordering:
        order = {id(data): version for data, version in rows}
        sorted_rows = sort_rows([data for data, _ in rows], ordering)
        rows = [(data, order[id(data)]) for data in sorted_rows]
    matched = len(rows)
    if top is not None:
        rows = rows[:top]
    page_size = max_page_size(headers)
    start = int(query.get("$skiptoken", "0") or 0)
    end = len(rows) if page_size is None else start + page_size
    values = []
    for data, version in rows[start:end]:
        shown = without_context(emulator._representation(table, data, version, select))
        if query.get("$expand"):
            expand(emulator, shown, data, query["$expand"])
        values.append(shown)
    body: dict[str, Any] = {
        "@odata.context": f"{emulator.environment_url}{API_PREFIX}$metadata#{table.entity_set}"
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
            body["@odata.nextLink"] = f"{emulator.environment_url}{API_PREFIX}{resource}?{encoded}"
    response = json_response(200, body)
    response.headers.update(response_headers)
    return response


def navigate(
    emulator: DataverseEmulator,
    method: str,
    table: Table,
    key: str,
    rest: str,
    query: Mapping[str, str],
    payload: dict[str, Any],
    references: dict[str, tuple[str, str]],
) -> Response:
    found = emulator._find(table, key)
    if found is None:
        raise emulator._not_found(table, key)
    row_id = found[0]
    if rest.startswith("Microsoft.Dynamics.CRM."):
        operation = rest[len("Microsoft.Dynamics.CRM.") :]
        name, _, inner = operation.partition("(")
        return emulator._operation(
            method, name, inner.rstrip(")") or None, query, payload, (table.entity_set, row_id)
        )
    navigation, target, ref = parse_navigation(rest)
    if ref and method == "POST":
        target_set, target_id = emulator._resolve_url(str(payload.get("@odata.id", "")), references)
        emulator.store.link(table.entity_set, row_id, navigation, target_set, target_id)
        return Response(204)
    if ref and method == "DELETE":
        data = found[1]
        if target is None and f"_{navigation}_value" in data:
            data[f"_{navigation}_value"] = None
            emulator.store.put(table.entity_set, row_id, data, table.alternate_keys)
            return Response(204)
        emulator.store.unlink(
            table.entity_set, row_id, navigation, target.lower() if target else None
        )
        return Response(204)
    if not ref and method == "GET":
        related = []
        for target_set, target_id in emulator.store.linked(table.entity_set, row_id, navigation):
            stored = emulator.store.get(target_set, target_id)
            if stored is not None:
                related.append(
                    emulator._representation(
                        emulator.tables[target_set],
                        stored[0],
                        stored[1],
                        select_columns(query.get("$select")),
                    )
                )
        return json_response(200, {"value": related})
    raise WebApiError(405, BAD_REQUEST, f"{method} is not allowed on {rest}")


# --- actions, functions, $batch -------------------------------------------------------------
