"""`EntityDefinitions`: the table definitions a client reads to turn a logical name into its
entity set (Learn, "Query table definitions using the Web API").

    GET EntityDefinitions?$select=LogicalName,EntitySetName&$filter=LogicalName eq 'account'
    GET EntityDefinitions(LogicalName='account')?$select=EntitySetName

Only what the emulator's tables know is served (LogicalName, EntitySetName, PrimaryIdAttribute,
PrimaryNameAttribute, MetadataId; a table's `Attributes` are an empty collection, since
`tables.toml` does not type columns); an unknown name is an empty collection or 404, as in
Dataverse. Microsoft's Python SDK reads these before its first write to a table.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from shared.tables import TableSpec
from tools.emulator.wire import NOT_FOUND, WebApiError

_LOGICAL_EQ = re.compile(r"^\s*LogicalName\s+eq\s+'(?P<name>[^']*)'\s*$")
_BY_NAME = re.compile(r"^LogicalName='(?P<name>[^']*)'$")
_UNSUPPORTED = "0x80060888"  # the query option is not supported on the definitions


def _definition(table: TableSpec, select: str | None) -> dict[str, Any]:
    found = {
        "LogicalName": table.logical_name,
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, table.logical_name)),
    }
    if select:
        wanted = {name.strip() for name in select.split(",")}
        found = {name: value for name, value in found.items() if name in wanted}
    return found


def entity_definitions(
    tables: Iterable[TableSpec],
    key: str | None,
    rest: str | None,
    query: Mapping[str, str],
    metadata_url: str,
) -> dict[str, Any]:
    by_name = {table.logical_name: table for table in tables}
    select = query.get("$select")
    if key is not None:
        match = _BY_NAME.match(key)
        table = by_name.get(match.group("name")) if match else None
        if table is None:
            raise WebApiError(404, NOT_FOUND, f"Could not find an entity with key {key}")
        if rest is not None and rest.startswith("Attributes"):
            # tables.toml does not type columns: no column is a choice (picklist) here.
            return {"@odata.context": f"{metadata_url}#EntityDefinitions/Attributes", "value": []}
        if rest:
            raise WebApiError(400, _UNSUPPORTED, f"The emulator does not serve {rest}")
        return {"@odata.context": f"{metadata_url}#EntityDefinitions/$entity"} | _definition(
            table, select
        )
    chosen = list(by_name.values())
    if "$filter" in query:
        match = _LOGICAL_EQ.match(query["$filter"])
        if match is None:
            raise WebApiError(
                400, _UNSUPPORTED, "The emulator filters EntityDefinitions by LogicalName only"
            )
        chosen = [by_name[match.group("name")]] if match.group("name") in by_name else []
    return {
        "@odata.context": f"{metadata_url}#EntityDefinitions",
        "value": [_definition(table, select) for table in chosen],
    }
