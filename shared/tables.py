"""The project's description of its Dataverse tables (tables.toml): logical and entity set
names, primary id and name, columns, lookups and alternate keys.

Routes are checked against it when handler modules are imported, and the local emulator serves
exactly these tables. A table without `columns` is taken as described by name only: any column
is accepted for it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TABLES_FILE = Path(__file__).resolve().parents[1] / "tables.toml"


class TablesError(ValueError):
    """tables.toml is not valid; says which table and why."""


@dataclass(frozen=True)
class TableSpec:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None = None
    columns: frozenset[str] | None = None  # None: any column
    lookups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    alternate_keys: tuple[tuple[str, ...], ...] = ()

    def knows(self, column: str) -> bool:
        """Whether `column` is one of the table's columns (its id and lookups included)."""
        if self.columns is None:
            return True
        return column in self.columns or column == self.primary_id or column in self.lookups

    @property
    def all_columns(self) -> frozenset[str] | None:
        if self.columns is None:
            return None
        return self.columns | {self.primary_id} | frozenset(self.lookups)


def table(logical_name: str, **options: Any) -> TableSpec:
    """A table with Dataverse's default names: `<name>s` and `<name>id`."""
    columns = options.pop("columns", None)
    return TableSpec(
        logical_name=logical_name,
        entity_set=options.pop("entity_set", None) or f"{logical_name}s",
        primary_id=options.pop("primary_id", None) or f"{logical_name}id",
        columns=None if columns is None else frozenset(c.lower() for c in columns),
        **options,
    )


def parse_tables(document: Mapping[str, Any], where: str = "tables.toml") -> dict[str, TableSpec]:
    tables: dict[str, TableSpec] = {}
    allowed = {"entity_set", "primary_id", "primary_name", "columns", "lookups", "alternate_keys"}
    for name, raw in document.items():
        if not isinstance(raw, Mapping):
            raise TablesError(f"{where}: [{name}] must be a table of settings")
        unknown = set(raw) - allowed
        if unknown:
            raise TablesError(f"{where}: [{name}] has unknown settings {sorted(unknown)}")
        if name != name.lower():
            raise TablesError(f"{where}: [{name}]: logical names are lower case")
        lookups = {
            str(column).lower(): tuple(str(target).lower() for target in targets)
            for column, targets in dict(raw.get("lookups", {})).items()
        }
        keys = tuple(
            tuple(str(column).lower() for column in key) for key in raw.get("alternate_keys", [])
        )
        spec = table(
            name,
            entity_set=raw.get("entity_set"),
            primary_id=raw.get("primary_id"),
            primary_name=raw.get("primary_name"),
            columns=raw.get("columns"),
            lookups=lookups,
            alternate_keys=keys,
        )
        for key in keys:
            missing = [column for column in key if not spec.knows(column)]
            if missing:
                raise TablesError(f"{where}: [{name}] alternate key {key} names {missing}")
        tables[name] = spec
    return tables


def load_tables(path: Path | None = None) -> dict[str, TableSpec]:
    path = path or TABLES_FILE
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TablesError(f"no tables file at {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise TablesError(f"{path}: {error}") from None
    return parse_tables(document, str(path))


@cache
def project_tables() -> Mapping[str, TableSpec]:
    """The project's tables.toml, read once per process; empty when the file is absent (a
    package built without it), so routes are then checked by name rules only."""
    if not TABLES_FILE.exists():
        return {}
    return load_tables()
