"""Turns a reader's neutral tree into Dataverse values: the one code path for values.

Every reader (JSON, XML, .NET binary XML) produces the same neutral tree, shaped like the JSON
format: objects are dicts keyed by SDK member names, typed objects carry `"__type"`,
collections are lists of `{"key": ..., "value": ...}`. Leaves are either JSON scalars (str,
int, float, bool, None) or values a typed format already decoded (UUID, datetime, Decimal).
This module converts such a tree into the types of `shared.context.types`.

Conversion rules that JSON forces on every format, so all three agree value by value:
- a string in the canonical GUID form is a `UUID` (JSON writes Guids as bare strings);
- a string `/Date(ms)/` or `/Date(ms+zzzz)/` is an aware UTC datetime (the offset is
  informational: the number is already UTC milliseconds);
- a non-integral number is a `Decimal` (JSON cannot tell a decimal from a double);
- an array of EntityReference is an `EntityReferenceCollection`, an array of
  `KeyValuePairOfstringstring` is a `dict[str, str]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from shared.errors import InvalidMessage
from shared.redaction import describe

from .types import (
    QUERY_TYPE_NAMES,
    AliasedValue,
    BooleanManagedProperty,
    DataContractValue,
    Entity,
    EntityCollection,
    EntityReference,
    EntityReferenceCollection,
    Money,
    OptionSetValue,
    Relationship,
    UnknownValue,
)

# Deep enough for any real context (parents, entities in collections in entities...), shallow
# enough that a hostile body cannot reach Python's recursion limit.
MAX_NESTING = 96

EMPTY_GUID = UUID(int=0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_DATE = re.compile(r"/Date\((-?\d{1,15})(?:[+-]\d{4})?\)/")
_HEX = frozenset("0123456789abcdefABCDEF-")


def _slot_setters(cls: type) -> list[Callable[[Any, Any], None]]:
    return [getattr(cls, field.name).__set__ for field in fields(cls)]


# Constructors for the frozen slots dataclasses that write the slots directly, in field order:
# a third of the cost of the generated __init__, which matters at hundreds of values per message.
# The public types stay frozen; only this module builds them this way.
_new = object.__new__
_entity_slots = _slot_setters(Entity)
_reference_slots = _slot_setters(EntityReference)
_set_option_value = _slot_setters(OptionSetValue)[0]
_set_money_value = _slot_setters(Money)[0]


def _new_entity(*members: Any) -> Entity:
    instance = _new(Entity)
    s = _entity_slots
    s[0](instance, members[0])
    s[1](instance, members[1])
    s[2](instance, members[2])
    s[3](instance, members[3])
    s[4](instance, members[4])
    s[5](instance, members[5])
    s[6](instance, members[6])
    s[7](instance, members[7])
    return instance


def _new_reference(*members: Any) -> EntityReference:
    instance = _new(EntityReference)
    s = _reference_slots
    s[0](instance, members[0])
    s[1](instance, members[1])
    s[2](instance, members[2])
    s[3](instance, members[3])
    s[4](instance, members[4])
    return instance


def _new_option(number: int) -> OptionSetValue:
    instance = _new(OptionSetValue)
    _set_option_value(instance, number)
    return instance


def _new_money(amount: Decimal) -> Money:
    instance = _new(Money)
    _set_money_value(instance, amount)
    return instance


# GUIDs and dates repeat within a message (the row id in Target, images, outputs and the parent
# context; the same users everywhere) and across messages. Both caches are bounded.
_CACHE_LIMIT = 4096
_guids: dict[str, UUID] = {}
_dates: dict[str, datetime] = {}


def clear_caches() -> None:
    """Forget memoised GUIDs and dates (benchmarks use it to measure a cold message)."""
    _guids.clear()
    _dates.clear()


def invalid(what: str, raw: object) -> InvalidMessage:
    # The value's type and length, not the value: this text reaches logs and dead letters.
    return InvalidMessage("InvalidValue", f"{what} is not valid: {describe(raw)}")


# --- scalars -------------------------------------------------------------------------------


def to_uuid(raw: object) -> UUID:
    if type(raw) is str:
        found = _guids.get(raw)
        if found is not None:
            return found
        try:
            found = UUID(raw)
        except ValueError:
            raise invalid("GUID", raw) from None
        if len(_guids) >= _CACHE_LIMIT:
            _guids.clear()
        _guids[raw] = found
        return found
    if isinstance(raw, UUID):
        return raw
    raise invalid("GUID", raw)


def to_optional_uuid(raw: object) -> UUID | None:
    """A GUID where .NET's empty GUID and a missing value both mean 'none'."""
    if raw is None or raw == "" or raw == "00000000-0000-0000-0000-000000000000":
        return None
    found = to_uuid(raw)
    return None if found == EMPTY_GUID else found


def to_datetime(raw: object) -> datetime:
    if type(raw) is str:
        found = _dates.get(raw)
        if found is None:
            found = _parse_datetime(raw)
            if len(_dates) >= _CACHE_LIMIT:
                _dates.clear()
            _dates[raw] = found
        return found
    if isinstance(raw, datetime):
        return raw if raw.tzinfo is UTC else to_datetime(raw.isoformat())
    raise invalid("date", raw)


def _parse_datetime(raw: str) -> datetime:
    if raw.startswith("/Date("):
        match = _JSON_DATE.fullmatch(raw)
        if match is None:
            raise invalid("date", raw)
        try:
            return _EPOCH + timedelta(milliseconds=int(match.group(1)))
        except OverflowError:
            raise invalid("date", raw) from None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid("date", raw) from None
    # Dataverse keeps UTC; a DateTime of unspecified kind is UTC too.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise invalid("date", raw) from None


def to_int(raw: object) -> int:
    if type(raw) is int:
        return raw
    if type(raw) is str:
        try:
            return int(raw)
        except ValueError:
            raise invalid("integer", raw) from None
    raise invalid("integer", raw)


def to_optional_int(raw: object) -> int | None:
    return None if raw is None or raw == "" else to_int(raw)


def to_bool(raw: object) -> bool:
    if raw is True or raw is False:
        return raw
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise invalid("boolean", raw)


def to_str(raw: object) -> str:
    if type(raw) is str:
        return raw
    raise invalid("text", raw)


def to_optional_str(raw: object) -> str | None:
    return None if raw is None else to_str(raw)


class FloatNeedsCheck(Exception):
    """Raised on meeting a double while `floats_checked` is False: the caller must first make
    sure no literal in the body is longer than a double holds (see json_reader)."""


# False while decoding JSON whose literals have not been checked yet; set by the context.
floats_checked: ContextVar[bool] = ContextVar("floats_checked", default=True)


def to_decimal(raw: object) -> Decimal:
    kind = type(raw)
    if kind is float:
        if not floats_checked.get():
            raise FloatNeedsCheck
        # repr gives the shortest text that round-trips, i.e. the digits the sender wrote when
        # they fit a double; the JSON reader re-reads a body with longer literals exactly.
        return Decimal(repr(raw))
    if kind is int or kind is Decimal:
        return Decimal(raw)  # type: ignore[arg-type]
    if kind is str:
        try:
            return Decimal(raw)  # type: ignore[arg-type]
        except InvalidOperation:
            raise invalid("number", raw) from None
    raise invalid("number", raw)


def _text(raw: str) -> Any:
    """A bare string: a GUID or a JSON date in disguise, or plain text."""
    if len(raw) == 36 and raw[8] == "-" and raw[23] == "-":
        found = _guids.get(raw)
        if found is not None:
            return found
        if _HEX.issuperset(raw):
            try:
                return to_uuid(raw)
            except InvalidMessage:
                return raw
        return raw
    if raw.startswith("/Date(") and raw.endswith(")/"):
        return to_datetime(raw)
    return raw


# --- values --------------------------------------------------------------------------------


def value(raw: object, nesting: int = 0) -> Any:
    """Convert any value found in a parameter, attribute or shared-variable collection."""
    kind = type(raw)
    if kind is str:
        return _text(raw)  # type: ignore[arg-type]
    if raw is None or kind is bool or kind is int:
        return raw
    if kind is dict:
        return _typed_object(raw, nesting + 1)  # type: ignore[arg-type]
    if kind is list:
        return _array(raw, nesting + 1)  # type: ignore[arg-type]
    if kind is float or kind is Decimal:
        return to_decimal(raw)
    if kind is UUID or kind is datetime or kind is bytes:
        return raw
    raise invalid("value", raw)


def _check_nesting(nesting: int) -> None:
    if nesting > MAX_NESTING:
        raise InvalidMessage("TooDeep", f"values are nested more than {MAX_NESTING} levels deep")


def _array(raw: list[Any], nesting: int) -> Any:
    _check_nesting(nesting)
    items = [value(item, nesting) for item in raw]
    if items:
        if all(type(item) is EntityReference for item in items):
            return EntityReferenceCollection(tuple(items))
        if all(type(item) is _StringPair for item in items):
            return {item.key: item.value for item in items}
    return items


_type_names: dict[str, str] = {}


def type_name_of(raw: Mapping[str, Any]) -> str | None:
    """`"Entity:http://schemas.microsoft.com/xrm/2011/Contracts"` -> `"Entity"`."""
    name = raw.get("__type")
    if name is None:
        return None
    found = _type_names.get(name)
    if found is None:
        if type(name) is not str:
            raise invalid("__type", name)
        found = name.partition(":")[0]
        if len(_type_names) < _CACHE_LIMIT:
            _type_names[name] = found
    return found


def _typed_object(raw: dict[str, Any], nesting: int) -> Any:
    _check_nesting(nesting)
    name = type_name_of(raw)
    if name is None:
        # An object without a type in an untyped position: keep its members readable.
        return {key: value(item, nesting) for key, item in raw.items()}
    build = _BUILDERS.get(name)
    if build is not None:
        if len(_builders_by_type) < _CACHE_LIMIT:
            _builders_by_type[raw["__type"]] = build
        return build(raw, nesting)
    if "__value" in raw:
        # {"__type": "Guid:#System", "__value": "..."}: a primitive with its type spelt out.
        primitive = _PRIMITIVES.get(name)
        if primitive is not None:
            return primitive(raw["__value"])
    if name in QUERY_TYPE_NAMES:
        members = {key: value(item, nesting) for key, item in raw.items() if key != "__type"}
        return DataContractValue(name, members)
    return UnknownValue(str(raw["__type"]), raw)


class _StringPair:
    """An item of a Dictionary<string, string>, folded into a dict by `_array`."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, item: str | None) -> None:
        self.key = key
        self.value = item


def pairs(raw: object, nesting: int) -> dict[str, Any]:
    """A ParameterCollection / AttributeCollection: `[{"key": k, "value": v}, ...]` -> dict."""
    if not raw:
        return {}
    if type(raw) is not list:
        raise invalid("collection", raw)
    _check_nesting(nesting)
    result: dict[str, Any] = {}
    for item in raw:
        key = item["key"]
        if type(key) is not str:
            raise invalid("collection key", key)
        found = item["value"]
        kind = type(found)
        # The common leaves inline: a call per value is a measurable share of decoding.
        if kind is str:
            result[key] = _text(found)
        elif found is None or kind is bool or kind is int:
            result[key] = found
        elif kind is dict and (build := _builders_by_type.get(found.get("__type"))) is not None:
            result[key] = build(found, nesting)
        else:
            result[key] = value(found, nesting)
    return result


def string_pairs(raw: object) -> dict[str, str]:
    if not raw:
        return {}
    if type(raw) is not list:
        raise invalid("collection", raw)
    return {to_str(item["key"]): to_str(item["value"]) for item in raw}


def entity(raw: Mapping[str, Any], nesting: int = 0) -> Entity:
    _check_nesting(nesting)
    if type(raw) is not dict:
        raise invalid("entity", raw)
    nesting += 1
    get = raw.get
    state = get("EntityState")
    related = get("RelatedEntities")
    return _new_entity(
        to_str(raw["LogicalName"]),
        to_optional_uuid(get("Id")),
        pairs(get("Attributes"), nesting),
        string_pairs(get("FormattedValues")),
        pairs(get("KeyAttributes"), nesting),
        to_optional_str(get("RowVersion")),
        None if state is None else _entity_state(state),
        _related_entities(related, nesting) if related else {},
    )


_ENTITY_STATES = {"Unchanged": 0, "Created": 1, "Changed": 2}


def _entity_state(raw: object) -> int | None:
    if type(raw) is str and raw in _ENTITY_STATES:
        return _ENTITY_STATES[raw]
    return to_optional_int(raw)


def _related_entities(raw: object, nesting: int) -> dict[Relationship, EntityCollection]:
    if not raw:
        return {}
    if type(raw) is not list:
        raise invalid("related entities", raw)
    return {
        relationship(item["key"], nesting): entity_collection(item["value"], nesting)
        for item in raw
    }


def entity_reference(raw: Mapping[str, Any], nesting: int = 0) -> EntityReference:
    if type(raw) is not dict:
        raise invalid("entity reference", raw)
    get = raw.get
    keys = get("KeyAttributes")
    return _new_reference(
        to_str(raw["LogicalName"]),
        to_optional_uuid(get("Id")),
        to_optional_str(get("Name")),
        pairs(keys, nesting + 1) if keys else {},
        to_optional_str(get("RowVersion")),
    )


def entity_collection(raw: Mapping[str, Any], nesting: int = 0) -> EntityCollection:
    _check_nesting(nesting)
    if not isinstance(raw, Mapping):
        raise invalid("entity collection", raw)
    items = raw.get("Entities") or []
    if type(items) is not list:
        raise invalid("entity collection", items)
    count = raw.get("TotalRecordCount")
    return EntityCollection(
        entities=tuple(entity(item, nesting + 1) for item in items),
        entity_name=to_optional_str(raw.get("EntityName")),
        more_records=to_bool(raw.get("MoreRecords", False)),
        paging_cookie=to_optional_str(raw.get("PagingCookie")),
        total_record_count=-1 if count is None else to_int(count),
        total_record_count_limit_exceeded=to_bool(raw.get("TotalRecordCountLimitExceeded", False)),
        min_active_row_version=to_optional_str(raw.get("MinActiveRowVersion")),
    )


def relationship(raw: Mapping[str, Any], nesting: int = 0) -> Relationship:
    if not isinstance(raw, Mapping):
        raise invalid("relationship", raw)
    role = raw.get("PrimaryEntityRole")
    return Relationship(
        schema_name=to_str(raw["SchemaName"]),
        primary_entity_role=None if role is None else str(role),
    )


def _option_set_value(raw: Mapping[str, Any], nesting: int) -> OptionSetValue:
    return _new_option(to_int(raw["Value"]))


def _money(raw: Mapping[str, Any], nesting: int) -> Money:
    return _new_money(to_decimal(raw["Value"]))


def _aliased_value(raw: Mapping[str, Any], nesting: int) -> AliasedValue:
    return AliasedValue(
        entity_logical_name=to_optional_str(raw.get("EntityLogicalName")),
        attribute_logical_name=to_optional_str(raw.get("AttributeLogicalName")),
        value=value(raw.get("Value"), nesting),
    )


def _boolean_managed_property(raw: Mapping[str, Any], nesting: int) -> BooleanManagedProperty:
    return BooleanManagedProperty(
        value=to_bool(raw["Value"]),
        can_be_changed=to_bool(raw.get("CanBeChanged", True)),
        managed_property_logical_name=to_optional_str(raw.get("ManagedPropertyLogicalName")),
    )


def _string_pair(raw: Mapping[str, Any], nesting: int) -> _StringPair:
    return _StringPair(to_str(raw["key"]), to_optional_str(raw.get("value")))


_BUILDERS: dict[str, Callable[[Any, int], Any]] = {
    "Entity": entity,
    "EntityReference": entity_reference,
    "EntityCollection": entity_collection,
    "Relationship": relationship,
    "OptionSetValue": _option_set_value,
    "Money": _money,
    "AliasedValue": _aliased_value,
    "BooleanManagedProperty": _boolean_managed_property,
    "KeyValuePairOfstringstring": _string_pair,
}

# The same builders keyed by the raw `__type` text as it arrives (namespace included), filled as
# types are met, so the hot loop in `pairs` skips splitting the name.
_builders_by_type: dict[object, Callable[[Any, int], Any]] = {}

_PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "Guid": to_uuid,
    "DateTime": to_datetime,
    "Decimal": to_decimal,
    "Double": to_decimal,
    "Int32": to_int,
    "Int64": to_int,
    "Boolean": to_bool,
    "String": to_str,
}
