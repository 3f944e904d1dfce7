"""What may reach logs, spans and dead-letter descriptions: identifiers, never column values.

Column values leak through text we do not write ourselves: a request URL (`$filter` literals,
alternate-key paths), Dataverse's error messages ("contoso_email='nancy@example.com' Does Not
Exist"), a decoder's view of a bad value. `redact()` removes quoted literals and query strings
from such text; `describe()` names a value's type and length instead of showing it. One switch,
`LOG_ATTRIBUTE_VALUES` (through `allow_values`), lets values through for debugging.
"""

from __future__ import annotations

import re

# Process-wide: set once from LOG_ATTRIBUTE_VALUES (a context variable set at import would not
# reach the worker's event-loop thread).
_values_allowed = False

# 'it''s' style literals (OData doubles a quote inside one), and "..." for JSON-ish messages.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"")
_QUERY = re.compile(r"\?[^\s)]*")


def allow_values(allowed: bool) -> None:
    global _values_allowed
    _values_allowed = allowed


def values_allowed() -> bool:
    return _values_allowed


def redact(text: str) -> str:
    """`text` with quoted literals replaced by `'***'` and query strings by `?***`."""
    if _values_allowed or not text:
        return text
    return _QUERY.sub("?***", _QUOTED.sub("'***'", text))


def describe(raw: object) -> str:
    """A value for an error message: its type and length, or the value itself when allowed."""
    if _values_allowed:
        shown = repr(raw)
        return shown if len(shown) <= 60 else shown[:57] + "..."
    size = f", {len(raw)} long" if isinstance(raw, str | bytes | list | dict) else ""
    return f"a {type(raw).__name__}{size}"


def printable(text: str, limit: int = 64) -> str:
    """A sender-controlled field for a log line or a description: control characters escaped,
    clipped to `limit`."""
    clipped = text[:limit]
    if not clipped.isprintable():
        clipped = clipped.encode("unicode_escape").decode("ascii")[:limit]
    return clipped + ("..." if len(text) > limit else "")
