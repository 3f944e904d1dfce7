"""Dataverse value types as small frozen Python objects, named after `Microsoft.Xrm.Sdk`.

These are what handlers see inside `Entity.attributes` and the parameter collections. Scalars
map to Python types directly: Guid -> `uuid.UUID`, DateTime -> aware UTC `datetime`, decimal,
double and money amounts -> `Decimal` (never float: the JSON format cannot tell a decimal from a
double, so every non-integral number is kept exactly), int and long -> `int`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class EntityReference:
    """A pointer to a row: `logical_name` plus `id` (or alternate `key_attributes`)."""

    logical_name: str
    id: UUID | None
    name: str | None = None
    key_attributes: Mapping[str, Any] = field(default_factory=dict)
    row_version: str | None = None

    def __hash__(self) -> int:
        return hash((self.logical_name, self.id))


@dataclass(frozen=True, slots=True)
class Entity:
    """A row or a partial row: the Target of Create/Update, an image, an EntityCollection item.

    Read columns as `entity["name"]`, `entity.get("name")` and `"name" in entity`. `id` is None
    when the row has none yet (Dataverse sends the empty GUID for that).
    """

    logical_name: str
    id: UUID | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    formatted_values: Mapping[str, str] = field(default_factory=dict)
    key_attributes: Mapping[str, Any] = field(default_factory=dict)
    row_version: str | None = None
    entity_state: int | None = None
    related_entities: Mapping[Relationship, EntityCollection] = field(default_factory=dict)

    def __getitem__(self, column: str) -> Any:
        return self.attributes[column]

    def get(self, column: str, default: Any = None) -> Any:
        return self.attributes.get(column, default)

    def __contains__(self, column: object) -> bool:
        return column in self.attributes

    def to_reference(self) -> EntityReference:
        return EntityReference(self.logical_name, self.id)

    def __hash__(self) -> int:
        return hash((self.logical_name, self.id))


@dataclass(frozen=True, slots=True)
class OptionSetValue:
    """A choice (picklist, state or status). Multi-select choices are `list[OptionSetValue]`."""

    value: int


@dataclass(frozen=True, slots=True)
class Money:
    """A currency amount; `value` is exact."""

    value: Decimal


@dataclass(frozen=True, slots=True)
class AliasedValue:
    """A column of a linked table in a query result."""

    entity_logical_name: str | None
    attribute_logical_name: str | None
    value: Any


@dataclass(frozen=True, slots=True)
class Relationship:
    """A relationship by schema name, as in Associate / Disassociate."""

    schema_name: str
    primary_entity_role: str | None = None


@dataclass(frozen=True, slots=True)
class EntityReferenceCollection:
    """The related rows of Associate / Disassociate."""

    references: tuple[EntityReference, ...] = ()

    def __iter__(self) -> Iterator[EntityReference]:
        return iter(self.references)

    def __len__(self) -> int:
        return len(self.references)

    def __getitem__(self, index: int) -> EntityReference:
        return self.references[index]


@dataclass(frozen=True, slots=True)
class EntityCollection:
    """A page of rows, as in RetrieveMultiple outputs or activity party lists."""

    entities: tuple[Entity, ...] = ()
    entity_name: str | None = None
    more_records: bool = False
    paging_cookie: str | None = None
    total_record_count: int = -1
    total_record_count_limit_exceeded: bool = False
    min_active_row_version: str | None = None

    def __iter__(self) -> Iterator[Entity]:
        return iter(self.entities)

    def __len__(self) -> int:
        return len(self.entities)

    def __getitem__(self, index: int) -> Entity:
        return self.entities[index]


@dataclass(frozen=True, slots=True)
class BooleanManagedProperty:
    """A managed property of a solution component (IsCustomizable and friends)."""

    value: bool
    can_be_changed: bool = True
    managed_property_logical_name: str | None = None


@dataclass(frozen=True, slots=True)
class DataContractValue:
    """A known SDK data contract kept as readable members: QueryExpression, FetchExpression,
    ColumnSet and the other query types. `members` hold decoded values by their SDK names."""

    type_name: str
    members: Mapping[str, Any]

    def __getitem__(self, member: str) -> Any:
        return self.members[member]

    def get(self, member: str, default: Any = None) -> Any:
        return self.members.get(member, default)


@dataclass(frozen=True, slots=True)
class UnknownValue:
    """A value of a type this library does not know, kept as sent: the type name plus the raw
    decoded structure, so a handler can still read it and nothing is lost."""

    type_name: str
    raw: Any


QUERY_TYPE_NAMES = frozenset(
    {
        "QueryExpression",
        "QueryByAttribute",
        "FetchExpression",
        "ColumnSet",
        "FilterExpression",
        "ConditionExpression",
        "LinkEntity",
        "OrderExpression",
        "PagingInfo",
    }
)
