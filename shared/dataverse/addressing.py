"""How rows, keys and parameters are written in Web API URLs (OData 4.0 literals)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from uuid import UUID

# A row is addressed by its id, or by the columns of one of its table's alternate keys.
RowAddress = UUID | str | Mapping[str, Any]


def literal(value: Any) -> str:
    """An OData literal: strings quoted with inner quotes doubled, GUIDs and numbers bare."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, int | Decimal | float):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    text = str(value).replace("'", "''")
    return f"'{text}'"


def row_segment(row: RowAddress) -> str:
    """`(00000000-...)` for an id, `(key1='a',key2=2)` for an alternate key."""
    if isinstance(row, UUID):
        return f"({row})"
    if isinstance(row, str):
        return f"({UUID(row)})"  # validates: an id string must be a GUID
    if not row:
        raise ValueError("an alternate key needs at least one column")
    parts = ",".join(f"{name}={quote(literal(value), safe=chr(39))}" for name, value in row.items())
    return f"({parts})"


def row_path(entity_set: str, row: RowAddress) -> str:
    return f"{entity_set}{row_segment(row)}"


def id_from_entity_url(url: str) -> UUID | None:
    """The row id at the end of an `OData-EntityId` URL: `.../accounts(<guid>)`."""
    if not url.endswith(")"):
        return None
    inner = url[url.rfind("(") + 1 : -1]
    try:
        return UUID(inner)
    except ValueError:
        return None  # addressed by alternate key: no id in the URL
