"""What Dataverse checks of a request against the table's definition before it runs it: the
properties of a payload, the columns `$select`, `$filter` and `$orderby` name, and the query
options it does not support. Tables without a column list (tables.toml) are not checked.

Status, code and message as Dataverse answers them: Learn "Troubleshoot Dataverse Web API client
errors" (a `$select` of an unknown property: 400, code 0x0, "Could not find a property named
...") and the payload error Dataverse returns for an undeclared property (0x80048d19, the OData
library's message as its inner exception).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.tables import TableSpec
from tools.emulator.odata import filter_columns, order_key

PROPERTY_NOT_FOUND = "0x0"
PAYLOAD_ERROR = "0x80048d19"
UNSUPPORTED_OPTION = "0x80060888"
# Learn "Query data using the Web API": Dataverse does not support these system query options.
UNSUPPORTED_OPTIONS = ("$skip", "$search", "$format")


class SchemaError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def readable(table: TableSpec, column: str) -> bool:
    """A column a query may name: the table's, its id, or a lookup's `_<name>_value`."""
    if table.columns is None or table.knows(column):
        return True
    return column.startswith("_") and column.endswith("_value") and column[1:-6] in table.lookups


def check_payload(table: TableSpec, payload: Mapping[str, Any]) -> None:
    if table.columns is None:
        return
    for name in payload:
        if name.endswith("@odata.bind"):
            navigation = name[: -len("@odata.bind")]
            lookup = navigation if navigation in table.lookups else navigation.rpartition("_")[0]
            if lookup in table.lookups:
                continue
            raise SchemaError(
                PAYLOAD_ERROR,
                f"An undeclared property '{navigation}' which only has property annotations in "
                "the payload but no property value was found in the payload. In OData, only "
                "declared navigation properties and declared named streams can be represented "
                "as properties without values.",
            )
        if "@" in name:
            continue  # an instance annotation (@odata.type, ...)
        if not table.knows(name):
            raise SchemaError(
                PAYLOAD_ERROR,
                f"Error identified in Payload provided by the user for Entity :'{table.entity_set}'"
                ", For more information on this error please follow this help link "
                "https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
                f"Microsoft.OData.ODataException: The property '{name}' does not exist on type "
                f"'Microsoft.Dynamics.CRM.{table.logical_name}'. Make sure to only use property "
                "names that are defined by the type or mark the type as open type.",
            )


def check_columns(table: TableSpec, columns: Iterable[str]) -> None:
    for column in columns:
        if not readable(table, column):
            raise SchemaError(
                PROPERTY_NOT_FOUND,
                f"Could not find a property named '{column}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical_name}'.",
            )


def check_select(table: TableSpec, query: Mapping[str, str]) -> None:
    """The columns of `$select`, on a row or a collection."""
    if query.get("$select"):
        check_columns(table, (c.strip() for c in query["$select"].split(",")))


def check_query(table: TableSpec, query: Mapping[str, str]) -> None:
    """The options and columns of a collection query, as Dataverse checks them."""
    for option in UNSUPPORTED_OPTIONS:
        if option in query:
            raise SchemaError(UNSUPPORTED_OPTION, f"The query parameter {option} is not supported")
    check_select(table, query)
    if query.get("$filter"):
        check_columns(table, filter_columns(query["$filter"]))
    if query.get("$orderby"):
        check_columns(table, (column for column, _ in order_key(query["$orderby"])))
