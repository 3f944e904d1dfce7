"""The query options the emulator understands: `$filter` (comparisons, and/or/not, parentheses,
contains/startswith/endswith), `$orderby`, and FetchXML's common subset.

Rows are plain dicts of Web API JSON values (GUIDs and dates as strings), so comparisons are
made on those representations, as Dataverse's own JSON shows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree

Predicate = Callable[[dict[str, Any]], bool]


class QueryError(ValueError):
    """A query option the emulator (or Dataverse) cannot read; answered with 400."""


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})|(?P<date>\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)?)"
    r"|(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w./]*)|(?P<punct>[(),]))"
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"contains", "startswith", "endswith"}


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise QueryError(f"Syntax error at position {position} in '{text}'")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _value(kind: str, raw: str) -> Any:
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    if kind == "guid":
        return raw.lower()
    if kind == "number":
        return float(raw) if "." in raw else int(raw)
    if kind == "date":
        return raw
    return {"true": True, "false": False, "null": None}[raw]


def _compare(left: Any, operator: str, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()  # Dataverse compares text case-insensitively
    if operator == "eq":
        return bool(left == right)
    if operator == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool(
            {
                "gt": left > right,
                "ge": left >= right,
                "lt": left < right,
                "le": left <= right,
            }[operator]
        )
    except TypeError:
        return False


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise QueryError(f"Syntax error: expected {expected or 'more'}, found {token}")
        self.position += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.disjunction()
        if self.peek() is not None:
            raise QueryError(f"Syntax error: unexpected {self.peek()}")
        return predicate

    def disjunction(self) -> Predicate:
        return self._joined("or", self.conjunction, any)

    def conjunction(self) -> Predicate:
        return self._joined("and", self.negation, all)

    def _joined(
        self,
        word: str,
        operand: Callable[[], Predicate],
        combine: Callable[[Iterator[bool]], bool],
    ) -> Predicate:
        """Operands separated by `word`, combined by `combine` (any for or, all for and)."""
        parts = [operand()]
        while self.peek() == ("name", word):
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else lambda row: combine(part(row) for part in parts)

    def negation(self) -> Predicate:
        if self.peek() == ("name", "not"):
            self.take()
            inner = self.negation()
            return lambda row: not inner(row)
        return self.primary()

    def primary(self) -> Predicate:
        token = self.take()
        if token == ("punct", "("):
            inner = self.disjunction()
            self.take(")")
            return inner
        kind, raw = token
        if kind == "name" and raw in _FUNCTIONS:
            self.take("(")
            column = self.take()[1]
            self.take(",")
            argument = _value(*self.take())
            self.take(")")
            method = {
                "contains": "__contains__",
                "startswith": "startswith",
                "endswith": "endswith",
            }
            name = method[raw]
            return lambda row: (
                isinstance(row.get(column), str)
                and bool(getattr(row[column].lower(), name)(str(argument).lower()))
            )
        if kind != "name":
            raise QueryError(f"Syntax error: a comparison must start with a column, not {raw}")
        operator = self.take()[1]
        if operator not in _COMPARISONS:
            raise QueryError(f"Syntax error: unknown operator '{operator}'")
        right = _value(*self.take())
        return lambda row: _compare(row.get(raw), operator, right)


def parse_filter(text: str) -> Predicate:
    return _Parser(text).parse()


def order_key(orderby: str) -> list[tuple[str, bool]]:
    """`"name asc, createdon desc"` -> `[("name", False), ("createdon", True)]`."""
    keys = []
    for part in orderby.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise QueryError(f"Syntax error in $orderby: '{orderby}'")
        keys.append((words[0], len(words) == 2 and words[1] == "desc"))
    return keys


def sort_rows(rows: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    for column, descending in reversed(keys):
        rows.sort(key=lambda row: _null_first(row.get(column)), reverse=descending)
    return rows


def _null_first(value: Any) -> tuple[bool, Any]:
    """Nulls sort before every value, as in Dataverse; 0 and false are values, not nulls."""
    return (False, "") if value is None else (True, value)


_FETCH_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda left, right: _compare(left, "eq", right),
    "ne": lambda left, right: _compare(left, "ne", right),
    "gt": lambda left, right: _compare(left, "gt", right),
    "lt": lambda left, right: _compare(left, "lt", right),
    "null": lambda left, _: left is None,
    "not-null": lambda left, _: left is not None,
    "like": lambda left, right: (
        isinstance(left, str)
        and re.fullmatch(re.escape(str(right)).replace("%", ".*"), left, re.IGNORECASE) is not None
    ),
}


def _condition(operator: Callable[[Any, Any], bool], column: str, expected: Any) -> Predicate:
    return lambda row: operator(row.get(column), expected)


def _combined(combine: Callable[[Any], bool], tests: list[Predicate]) -> Predicate:
    return lambda row: combine(test(row) for test in tests)


def parse_fetch(
    fetch_xml: str,
) -> tuple[str, list[str] | None, Predicate, list[tuple[str, bool]], int | None]:
    """(table, columns or None for all, row predicate, ordering, top) of a FetchXML query."""
    try:
        root = ElementTree.fromstring(fetch_xml)
    except ElementTree.ParseError as error:
        raise QueryError(f"Invalid FetchXML: {error}") from None
    entity = root.find("entity")
    if root.tag != "fetch" or entity is None or not entity.get("name"):
        raise QueryError("Invalid FetchXML: expected <fetch><entity name=...>")
    columns = (
        None
        if entity.find("all-attributes") is not None
        else [attribute.get("name", "") for attribute in entity.findall("attribute")]
    )
    conditions: list[Predicate] = []
    for filter_element in entity.findall("filter"):
        tests = []
        for condition in filter_element.findall("condition"):
            operator = _FETCH_OPERATORS.get(condition.get("operator", ""))
            if operator is None:
                raise QueryError(f"FetchXML operator {condition.get('operator')!r} not supported")
            column = condition.get("attribute", "")
            raw = condition.get("value")
            expected: Any = raw
            if raw is not None and re.fullmatch(r"-?\d+", raw):
                expected = int(raw)
            tests.append(_condition(operator, column, expected))
        combine = any if filter_element.get("type", "and") == "or" else all
        conditions.append(_combined(combine, tests))
    ordering = [
        (order.get("attribute", ""), order.get("descending") == "true")
        for order in entity.findall("order")
    ]
    top = root.get("top") or root.get("count")
    return (
        entity.get("name", ""),
        columns,
        lambda row: all(condition(row) for condition in conditions),
        ordering,
        int(top) if top else None,
    )


_KEYWORDS = {"and", "or", "not", "true", "false", "null", *_COMPARISONS, *_FUNCTIONS}


def filter_columns(text: str) -> set[str]:
    """The columns a `$filter` names (for the property check Dataverse makes first)."""
    return {raw for kind, raw in _tokens(text) if kind == "name" and raw not in _KEYWORDS}
