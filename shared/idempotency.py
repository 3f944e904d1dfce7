"""Exactly-once effects and ordering over at-least-once delivery.

Two kinds of claim, both taken before a handler runs and completed after it succeeded:

- per event and handler (`claim`): acquired (run it), completed already (a duplicate delivery:
  skip), or held by another delivery whose lease has not run out (retry later). A crashed
  instance blocks an event for at most the lease. Completed claims are kept for a retention
  period that outlives every redelivery and replay.
- per row and handler, for routes declared `ordered=True` (`claim_in_order`): one record per
  row holds a lease, so one event of a row runs the handler at a time, and a watermark, the
  position (row version, else OperationCreatedOn) of the last event applied. An event at or
  behind the watermark is refused as stale before the handler runs, and completing moves the
  watermark and drops the lease in one conditional write, atomically with the completion.

`InMemoryIdempotencyStore` serves tests and the demo; `shared.idempotency_table` keeps the same
records in Azure Table Storage, shared by every instance.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol
from uuid import UUID

from shared.context import Entity, RemoteExecutionContext
from shared.events import DataverseEvent

DEFAULT_LEASE_SECONDS = 300.0  # the longest a handler may run before another delivery takes over
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0  # Dataverse retries and broker replays end well before
# A row's watermark outlives the longest a late event of that row can still arrive: the queue's
# 14-day message TTL (infra/main.bicep), plus a day.
DEFAULT_ROW_RETENTION_SECONDS = 15 * 24 * 3600.0
# Azure Tables' earliest DateTime. A context without OperationCreatedOn reads as .NET's
# DateTime.MinValue (year 1), which Azure refuses (Azurite accepts it): positions start here.
TABLE_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


class ClaimState(enum.Enum):
    ACQUIRED = "acquired"
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"
    STALE = "stale"  # ordered routes: an event at or behind the row's watermark


class Position(NamedTuple):
    """Where an event stands in the history of its row."""

    created_on: datetime  # OperationCreatedOn: when Dataverse created the posting job
    row_version: int | None  # the row's RowVersion after the change, where the event carries it
    operation: str  # OperationId, to tell a duplicate from another change at the same instant


@dataclass
class Watermark:
    """The last position applied to a row by one handler (operations: all applied at it)."""

    created_on: datetime
    row_version: int | None
    operations: set[str] = field(default_factory=set)

    def admits(self, position: Position) -> bool:
        """Whether `position` is newer than this watermark. Row versions decide where both
        sides have one (Dataverse increments them with every change of the row); otherwise the
        posting times do. A tie is new unless it is the very operation already applied."""
        if position.row_version is not None and self.row_version is not None:
            if position.row_version != self.row_version:
                return position.row_version > self.row_version
        elif position.created_on != self.created_on:
            return position.created_on > self.created_on
        return position.operation not in self.operations

    def applied(self, position: Position) -> bool:
        """Whether this very operation set the watermark (a redelivery of it)."""
        return position.operation in self.operations

    def advanced_to(self, position: Position) -> Watermark:
        same_instant = (position.row_version, position.created_on) == (
            self.row_version,
            self.created_on,
        )
        operations = (
            (self.operations | {position.operation}) if same_instant else {position.operation}
        )
        return Watermark(position.created_on, position.row_version, operations)


def advance(watermark: Watermark | None, position: Position) -> Watermark:
    """The row's watermark once `position` is applied (None: the row's first event)."""
    if watermark is None:
        return Watermark(position.created_on, position.row_version, {position.operation})
    return watermark.advanced_to(position)


class Claim(NamedTuple):
    key: str
    state: ClaimState
    token: str | None = None  # proof of ownership: an etag for the table store
    position: Position | None = None  # ordered claims: the position to record on completion
    watermark: Watermark | None = None  # ordered claims: the row's watermark when claimed


class IdempotencyStore(Protocol):
    # How long a claim is held: the dispatcher ends a handler before it runs this long.
    lease_seconds: float

    async def claim(self, key: str) -> Claim: ...

    async def claim_in_order(self, record: str, handler: str, position: Position) -> Claim: ...

    async def complete(self, claim: Claim) -> None: ...

    async def release(self, claim: Claim) -> None: ...

    async def purge_expired(self) -> int: ...


class LostClaim(Exception):
    """The claim's lease ran out and another delivery took it over while this one ran."""


_EMPTY = str(UUID(int=0))


def event_key(event: DataverseEvent) -> str:
    """What identifies one event, whatever the transport and however often delivered:
    `OperationId` is the system job that posted it, and several steps on one operation share it,
    so the step (`OwningExtension`) is part of the key. Without either, the body's hash stands
    in: a Dataverse retry re-sends the same body. Built from the members' text, undecoded."""
    context = event.context
    operation = str(context.raw("OperationId") or "").lower()
    owner = context.raw("OwningExtension")
    step = str(owner.get("Id") or "").lower() if isinstance(owner, dict) else ""
    if operation and operation != _EMPTY and step and step != _EMPTY:
        return f"{operation}|{step}"
    return "body-" + hashlib.sha256(event.body).hexdigest()[:40]


def claim_key(event: DataverseEvent, handler: str) -> str:
    return f"{event_key(event)}|{handler}"


def record_key(context: RemoteExecutionContext) -> str:
    return f"{context.primary_entity_name}|{context.primary_entity_id}"


def position_of(context: RemoteExecutionContext) -> Position:
    """The event's position: a post image's row version, else the Target's, and the time.

    A post image carries the row's version after the change. The Target of an update sent with
    If-Match carries the version the caller read, the one before the change: preferring it made
    a newer change tie with an older one, and the older was applied last."""
    row_version: int | None = None
    candidates = [*context.post_entity_images.values(), context.target]
    for entity in candidates:
        if isinstance(entity, Entity) and entity.row_version and entity.row_version.isdigit():
            row_version = int(entity.row_version)
            break
    created_on = max(context.operation_created_on, TABLE_EPOCH)
    return Position(created_on, row_version, str(context.operation_id))


class InMemoryIdempotencyStore:
    """One process's memory: the embedded default for tests and the demo. It does not survive
    a restart and is not shared between instances; in Azure the table store is the default."""

    def __init__(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        row_retention_seconds: float = DEFAULT_ROW_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.row_retention_seconds = row_retention_seconds
        self._clock = clock
        self._claims: dict[str, tuple[ClaimState, float, str]] = {}
        # Per row and handler: watermark, lease owner, lease end, when the record expires.
        self._rows: dict[str, tuple[Watermark | None, str | None, float, float]] = {}
        # Ownership tokens need only be unique within this process.
        self._tokens = itertools.count(1)

    async def claim(self, key: str) -> Claim:
        now = self._clock()
        record = self._claims.get(key)
        if record is not None:
            state, until, _ = record
            if until > now:
                return Claim(key, state)  # COMPLETED, or IN_PROGRESS under a live lease
        token = str(next(self._tokens))
        self._claims[key] = (ClaimState.IN_PROGRESS, now + self.lease_seconds, token)
        return Claim(key, ClaimState.ACQUIRED, token)

    async def claim_in_order(self, record: str, handler: str, position: Position) -> Claim:
        key = f"{record}|{handler}"
        now = self._clock()
        watermark, owner, until, _ = self._rows.get(key, (None, None, 0.0, 0.0))
        if owner is not None and until > now:
            return Claim(key, ClaimState.IN_PROGRESS, position=position)
        if watermark is not None and not watermark.admits(position):
            state = ClaimState.COMPLETED if watermark.applied(position) else ClaimState.STALE
            return Claim(key, state, position=position)
        token = str(next(self._tokens))
        self._rows[key] = (watermark, token, now + self.lease_seconds, self._row_expiry())
        return Claim(key, ClaimState.ACQUIRED, token, position)

    def _row_expiry(self) -> float:
        return self._clock() + self.row_retention_seconds

    async def complete(self, claim: Claim) -> None:
        if claim.position is not None:
            watermark, owner, _, _ = self._rows.get(claim.key, (None, None, 0.0, 0.0))
            if owner != claim.token:
                raise LostClaim(claim.key)
            advanced = advance(watermark, claim.position)
            self._rows[claim.key] = (advanced, None, 0.0, self._row_expiry())
            return
        record = self._claims.get(claim.key)
        if record is None or record[2] != claim.token:
            raise LostClaim(claim.key)
        until = self._clock() + self.retention_seconds
        self._claims[claim.key] = (ClaimState.COMPLETED, until, record[2])

    async def release(self, claim: Claim) -> None:
        if claim.position is not None:
            watermark, owner, _, expires = self._rows.get(claim.key, (None, None, 0.0, 0.0))
            if owner == claim.token:
                self._rows[claim.key] = (watermark, None, 0.0, expires)
            return
        record = self._claims.get(claim.key)
        if record is not None and record[2] == claim.token:
            del self._claims[claim.key]

    async def purge_expired(self) -> int:
        now = self._clock()
        expired = [key for key, (_, until, _) in self._claims.items() if until <= now]
        for key in expired:
            del self._claims[key]
        quiet = [
            key
            for key, (_, _, lease, expires) in self._rows.items()
            if expires <= now and lease <= now
        ]
        for key in quiet:
            del self._rows[key]
        return len(expired) + len(quiet)
