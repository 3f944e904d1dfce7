"""The emulator's storage: rows, their versions (etags) and associations, in SQLite.

In memory by default; a file path keeps data between runs. Change sets run inside a savepoint
so a failing request rolls the whole change set back, as Dataverse does.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from shared.tables import TableSpec, project_tables

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# The tables the emulator serves: the project's tables.toml, which routes are checked against
# too. A test or the demo adds others with DataverseEmulator.add_table().
Table = TableSpec
DEFAULT_TABLES: tuple[Table, ...] = tuple(project_tables().values())


class Store:
    def __init__(self, database: str = ":memory:") -> None:
        self._db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS rows (
                entity_set TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                version INTEGER NOT NULL, PRIMARY KEY (entity_set, id));
            CREATE TABLE IF NOT EXISTS links (
                entity_set TEXT NOT NULL, id TEXT NOT NULL, navigation TEXT NOT NULL,
                target_set TEXT NOT NULL, target_id TEXT NOT NULL,
                PRIMARY KEY (entity_set, id, navigation, target_id));
            CREATE TABLE IF NOT EXISTS keys (
                entity_set TEXT NOT NULL, columns TEXT NOT NULL, value TEXT NOT NULL,
                id TEXT NOT NULL, PRIMARY KEY (entity_set, columns, value));
            CREATE INDEX IF NOT EXISTS keys_by_row ON keys (entity_set, id);
            CREATE TABLE IF NOT EXISTS counter (version INTEGER NOT NULL);
            """
        )
        if self._db.execute("SELECT COUNT(*) FROM counter").fetchone()[0] == 0:
            self._db.execute("INSERT INTO counter VALUES (1000000)")

    def _next_version(self) -> int:
        self._db.execute("UPDATE counter SET version = version + 1")
        version: int = self._db.execute("SELECT version FROM counter").fetchone()[0]
        return version

    def get(self, entity_set: str, row_id: str) -> tuple[dict[str, Any], int] | None:
        found = self._db.execute(
            "SELECT data, version FROM rows WHERE entity_set = ? AND id = ?", (entity_set, row_id)
        ).fetchone()
        return None if found is None else (orjson.loads(found[0]), found[1])

    def put(
        self,
        entity_set: str,
        row_id: str,
        data: dict[str, Any],
        keys: tuple[tuple[str, ...], ...] = (),
    ) -> int:
        """Store a row; `keys` are its table's alternate keys, indexed for lookups."""
        version = self._next_version()
        self._db.execute(
            "INSERT INTO rows VALUES (?, ?, ?, ?) ON CONFLICT (entity_set, id) "
            "DO UPDATE SET data = excluded.data, version = excluded.version",
            (entity_set, row_id, orjson.dumps(data), version),
        )
        self._db.execute("DELETE FROM keys WHERE entity_set = ? AND id = ?", (entity_set, row_id))
        for columns in keys:
            values = {column: data.get(column) for column in columns}
            if all(value is not None for value in values.values()):
                self._db.execute(
                    "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)",
                    (entity_set, _key_name(columns), _key_value(values), row_id),
                )
        return version

    def delete(self, entity_set: str, row_id: str) -> bool:
        deleted = self._db.execute(
            "DELETE FROM rows WHERE entity_set = ? AND id = ?", (entity_set, row_id)
        ).rowcount
        self._db.execute("DELETE FROM keys WHERE entity_set = ? AND id = ?", (entity_set, row_id))
        self._db.execute(
            "DELETE FROM links WHERE (entity_set = ? AND id = ?) "
            "OR (target_set = ? AND target_id = ?)",
            (entity_set, row_id, entity_set, row_id),
        )
        return bool(deleted)

    def all(self, entity_set: str) -> list[tuple[dict[str, Any], int]]:
        return [
            (orjson.loads(data), version)
            for data, version in self._db.execute(
                "SELECT data, version FROM rows WHERE entity_set = ? ORDER BY rowid", (entity_set,)
            )
        ]

    def matching(
        self,
        entity_set: str,
        wanted: dict[str, Any],
        keys: tuple[tuple[str, ...], ...] = (),
    ) -> list[tuple[dict[str, Any], int]]:
        """Rows whose columns equal `wanted` (text compared case-insensitively, as Dataverse
        does): through the key index when `wanted` is one of `keys`, else by a scan in SQL."""
        declared = {_key_name(columns) for columns in keys}
        if _key_name(tuple(wanted)) in declared:
            found = self._db.execute(
                "SELECT id FROM keys WHERE entity_set = ? AND columns = ? AND value = ?",
                (entity_set, _key_name(tuple(wanted)), _key_value(wanted)),
            ).fetchone()
            row = None if found is None else self.get(entity_set, found[0])
            return [] if row is None else [row]
        sql = "SELECT data, version FROM rows WHERE entity_set = ?"
        parameters: list[Any] = [entity_set]
        for column, value in wanted.items():
            if not _COLUMN.fullmatch(column):
                raise ValueError(f"not a column name: {column!r}")
            if isinstance(value, str):
                sql += f" AND lower(json_extract(data, '$.{column}')) = lower(?)"
            else:
                sql += f" AND json_extract(data, '$.{column}') = ?"
            parameters.append(value)
        return [
            (orjson.loads(data), version) for data, version in self._db.execute(sql, parameters)
        ]

    def link(
        self, entity_set: str, row_id: str, navigation: str, target_set: str, target_id: str
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?, ?)",
            (entity_set, row_id, navigation, target_set, target_id),
        )

    def unlink(self, entity_set: str, row_id: str, navigation: str, target_id: str | None) -> bool:
        if target_id is None:
            sql = "DELETE FROM links WHERE entity_set = ? AND id = ? AND navigation = ?"
            return bool(self._db.execute(sql, (entity_set, row_id, navigation)).rowcount)
        sql = (
            "DELETE FROM links WHERE entity_set = ? AND id = ? AND navigation = ? AND target_id = ?"
        )
        return bool(self._db.execute(sql, (entity_set, row_id, navigation, target_id)).rowcount)

    def linked(self, entity_set: str, row_id: str, navigation: str) -> list[tuple[str, str]]:
        return list(
            self._db.execute(
                "SELECT target_set, target_id FROM links WHERE entity_set = ? AND id = ? "
                "AND navigation = ? ORDER BY rowid",
                (entity_set, row_id, navigation),
            )
        )

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A savepoint: everything inside is undone if the block raises."""
        self._db.execute("SAVEPOINT changeset")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO changeset")
            self._db.execute("RELEASE changeset")
            raise
        self._db.execute("RELEASE changeset")


def _key_name(columns: tuple[str, ...]) -> str:
    return ",".join(sorted(columns))


def _key_value(values: dict[str, Any]) -> str:
    canonical = {
        column: value.lower() if isinstance(value, str) else value
        for column, value in sorted(values.items())
    }
    return orjson.dumps(canonical).decode()
