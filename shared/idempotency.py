"""Exactly-once effects over at-least-once delivery: a claim per event and per handler.

Before a handler runs, the dispatcher claims `(event, handler)`. A claim is either acquired (run
the handler, then `complete`), already completed (skip: a duplicate delivery), or held by
someone else whose lease has not expired (retry later). A crashed instance never blocks an
event for longer than the lease. Completed claims are kept for a retention period, long enough
to outlive every redelivery and replay.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol
from uuid import UUID

from shared.events import DataverseEvent

DEFAULT_LEASE_SECONDS = 300.0  # the longest a handler may run before another instance may retry
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0  # Dataverse retries and broker replays end well before


class ClaimState(enum.Enum):
    ACQUIRED = "acquired"
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"


class Claim(NamedTuple):
    key: str
    state: ClaimState
    token: str | None = None  # the store's proof of ownership (an etag for the table store)


class IdempotencyStore(Protocol):
    async def claim(self, key: str) -> Claim: ...

    async def complete(self, claim: Claim) -> None: ...

    async def release(self, claim: Claim) -> None: ...


def event_key(event: DataverseEvent) -> str:
    """What identifies one delivery of one event, whatever the transport: `OperationId` is the
    system job that posted it, and several steps on one operation share it, so the step
    (`OwningExtension`) is part of the key. Without either, the body's hash stands in: a
    Dataverse retry re-sends the same body. Built from the members' text, undecoded."""
    context = event.context
    operation = str(context.raw("OperationId") or "").lower()
    owner = context.raw("OwningExtension")
    step = str(owner.get("Id") or "").lower() if isinstance(owner, dict) else ""
    if operation and operation != _EMPTY and step and step != _EMPTY:
        return f"{operation}|{step}"
    return "body-" + hashlib.sha256(event.body).hexdigest()[:40]


def claim_key(event: DataverseEvent, handler: str) -> str:
    return f"{event_key(event)}|{handler}"


_EMPTY = str(UUID(int=0))


class InMemoryIdempotencyStore:
    """One process's memory: the embedded default for tests and the demo. It does not survive
    a restart and is not shared between instances; use the table store in Azure."""

    def __init__(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._records: dict[str, tuple[ClaimState, float, str]] = {}
        self._tokens = 0

    async def claim(self, key: str) -> Claim:
        now = self._clock()
        record = self._records.get(key)
        if record is not None:
            state, until, _ = record
            if state is ClaimState.COMPLETED and until > now:
                return Claim(key, ClaimState.COMPLETED)
            if state is ClaimState.IN_PROGRESS and until > now:
                return Claim(key, ClaimState.IN_PROGRESS)
        self._tokens += 1
        token = str(self._tokens)
        self._records[key] = (ClaimState.IN_PROGRESS, now + self.lease_seconds, token)
        return Claim(key, ClaimState.ACQUIRED, token)

    async def complete(self, claim: Claim) -> None:
        record = self._records.get(claim.key)
        if record is None or record[2] != claim.token:
            raise LostClaim(claim.key)
        self._records[claim.key] = (
            ClaimState.COMPLETED,
            self._clock() + self.retention_seconds,
            record[2],
        )

    async def release(self, claim: Claim) -> None:
        record = self._records.get(claim.key)
        if record is not None and record[2] == claim.token:
            del self._records[claim.key]


class LostClaim(Exception):
    """The claim's lease expired and another delivery took it over while this one ran."""
