"""The idempotency store in Azure Table Storage: the app's own storage account, shared by every
instance (managed identity in Azure, Azurite locally).

Every change is a conditional write, so two instances can never both win:
- a claim is created with insert (a second insert of the same key fails);
- taking over an expired lease, completing and releasing replace the entity only if its etag is
  still the one this delivery saw (If-Match), else someone else got there first.

Layout, one table: per-event claims in partition `claim|<operation>|<step>` with one row per
handler; ordered routes in partition `order|<table>|<row id>` with one row per handler holding
the lease and the watermark. Every record carries `ExpiresAt`; `purge_expired` deletes those
past it.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from shared.idempotency import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_ROW_RETENTION_SECONDS,
    TABLE_EPOCH,
    Claim,
    ClaimState,
    LostClaim,
    Position,
    Watermark,
    advance,
)
from shared.storage import CreateOnce

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

DEFAULT_TABLE = "dataverseidempotency"
_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")  # not allowed in table keys
_IN_PROGRESS = "InProgress"
_COMPLETED = "Completed"
# Instances' clocks may disagree (one 120 s ahead took over a 300 s lease after 181 s); Azure
# hosts keep theirs within a second or two of each other, so this margin is wide. It delays a
# takeover after a crash, never a normal run.
CLOCK_SKEW_SECONDS = 150.0


def _safe(key: str) -> str:
    return _FORBIDDEN.sub("_", key)[:512]


class TableIdempotencyStore:
    def __init__(
        self,
        table: TableClient,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        row_retention_seconds: float = DEFAULT_ROW_RETENTION_SECONDS,
        clock_skew_seconds: float = CLOCK_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self.clock_skew_seconds = clock_skew_seconds
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.row_retention_seconds = row_retention_seconds
        self._clock = clock
        self._ensure_table = CreateOnce(table.create_table)

    async def close(self) -> None:
        await self._table.close()

    def _held(self, entity: Mapping[str, Any], now: float) -> bool:
        """Whether a lease written by another instance, by its own clock, is still live here:
        taken over only a skew margin after its end, so an instance whose clock runs ahead
        cannot cut a live lease short."""
        return float(entity.get("LeaseUntil", 0) or 0) + self.clock_skew_seconds > now

    def _row_lease(self, owner: str, until: float, now: float) -> dict[str, Any]:
        """A row record's lease, and its expiry: every write restarts the row's retention."""
        return {
            "LeaseOwner": owner,
            "LeaseUntil": until,
            "ExpiresAt": now + self.row_retention_seconds,
        }

    # --- per-event claims -----------------------------------------------------------------------

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        event, _, handler = key.rpartition("|")
        return _safe("claim|" + event), _safe(handler)

    @staticmethod
    def _order_keys(key: str) -> tuple[str, str]:
        """`<record>|<handler>` -> the row's partition and the handler's row key."""
        record, _, handler = key.rpartition("|")
        return _safe("order|" + record), _safe(handler)

    async def claim(self, key: str) -> Claim:
        await self._ensure_table()
        partition, row = self._split(key)
        for _ in range(3):
            now = self._clock()
            in_progress = {
                "PartitionKey": partition,
                "RowKey": row,
                "State": _IN_PROGRESS,
                "LeaseUntil": now + self.lease_seconds,
                "ExpiresAt": now + self.retention_seconds,
            }
            try:
                created = await self._table.create_entity(in_progress)
                return Claim(key, ClaimState.ACQUIRED, str(created["etag"]))
            except ResourceExistsError:
                pass
            try:
                existing = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                continue  # released meanwhile: try to create again
            if existing.get("State") == _COMPLETED and existing.get("ExpiresAt", 0) > now:
                return Claim(key, ClaimState.COMPLETED)
            if existing.get("State") == _IN_PROGRESS and self._held(existing, now):
                return Claim(key, ClaimState.IN_PROGRESS)
            # An expired lease (its instance crashed) or an expired completion: take it over.
            try:
                taken = await self._table.update_entity(
                    in_progress,
                    mode=UpdateMode.REPLACE,
                    etag=existing.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return Claim(key, ClaimState.ACQUIRED, str(taken["etag"]))
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # another delivery moved first: look again
        return Claim(key, ClaimState.IN_PROGRESS)

    # --- ordered claims ------------------------------------------------------------------------

    async def claim_in_order(self, record: str, handler: str, position: Position) -> Claim:
        await self._ensure_table()
        key = f"{record}|{handler}"
        partition, row = self._order_keys(key)
        for _ in range(3):
            now = self._clock()
            token = uuid.uuid4().hex
            try:
                existing = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                try:
                    created = await self._table.create_entity(
                        {
                            "PartitionKey": partition,
                            "RowKey": row,
                            **self._row_lease(token, now + self.lease_seconds, now),
                        }
                    )
                except ResourceExistsError:
                    continue
                return Claim(key, ClaimState.ACQUIRED, str(created["etag"]), position)
            if existing.get("LeaseOwner") and self._held(existing, now):
                return Claim(key, ClaimState.IN_PROGRESS, position=position)
            watermark = _watermark(existing)
            if watermark is not None and not watermark.admits(position):
                state = ClaimState.COMPLETED if watermark.applied(position) else ClaimState.STALE
                return Claim(key, state, position=position)
            try:
                taken = await self._table.update_entity(
                    {
                        **_without_metadata(existing),
                        **self._row_lease(token, now + self.lease_seconds, now),
                    },
                    mode=UpdateMode.REPLACE,
                    etag=existing.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            return Claim(key, ClaimState.ACQUIRED, str(taken["etag"]), position, watermark)
        return Claim(key, ClaimState.IN_PROGRESS, position=position)

    # --- completion ----------------------------------------------------------------------------

    async def complete(self, claim: Claim) -> None:
        if claim.position is not None:
            await self._complete_in_order(claim, claim.position)
            return
        partition, row = self._split(claim.key)
        try:
            await self._table.update_entity(
                {
                    "PartitionKey": partition,
                    "RowKey": row,
                    "State": _COMPLETED,
                    "LeaseUntil": 0.0,
                    "ExpiresAt": self._clock() + self.retention_seconds,
                },
                mode=UpdateMode.REPLACE,
                etag=claim.token,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise LostClaim(claim.key) from None

    async def _complete_in_order(self, claim: Claim, position: Position) -> None:
        # Our lease (the etag) guarantees the watermark is still the one read when claiming.
        try:
            await self._end_lease(claim, advance(claim.watermark, position))
        except (ResourceModifiedError, ResourceNotFoundError):
            raise LostClaim(claim.key) from None

    async def _end_lease(self, claim: Claim, watermark: Watermark | None) -> None:
        """One conditional replace of a row's entity: the watermark is set and the lease ends
        together, and only while the lease is still ours (its etag)."""
        partition, row = self._order_keys(claim.key)
        await self._table.update_entity(
            {
                "PartitionKey": partition,
                "RowKey": row,
                **_watermark_fields(watermark),
                **self._row_lease("", 0.0, self._clock()),
            },
            mode=UpdateMode.REPLACE,
            etag=claim.token,
            match_condition=MatchConditions.IfNotModified,
        )

    async def release(self, claim: Claim) -> None:
        """Give a claim up after a failure, so a redelivery need not wait for the lease."""
        try:
            if claim.position is not None:
                await self._end_lease(claim, claim.watermark)  # the watermark stays as it was
                return
            partition, row = self._split(claim.key)
            await self._table.delete_entity(
                partition, row, etag=claim.token, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # already taken over or gone: nothing of ours to release

    async def purge_expired(self) -> int:
        """Delete what is past its retention; returns how many: completed claims, claims left in
        progress by an instance that never came back (their ExpiresAt is set when claimed), and
        rows' ordering records not changed for the row retention. A live lease is never cut."""
        await self._ensure_table()
        now = self._clock()
        query = "ExpiresAt lt @now and LeaseUntil lt @lease"
        parameters = {"now": now, "lease": now - self.clock_skew_seconds}
        deleted = 0
        async for entity in self._table.query_entities(query, parameters=parameters):
            with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
                await self._table.delete_entity(
                    entity["PartitionKey"],
                    entity["RowKey"],
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                deleted += 1
        return deleted


def _without_metadata(entity: Mapping[str, Any]) -> dict[str, Any]:
    return dict(entity)


def _watermark_fields(watermark: Watermark | None) -> dict[str, Any]:
    if watermark is None:
        return {}
    return {
        "WatermarkOn": max(watermark.created_on, TABLE_EPOCH),
        # Text: row versions outgrow 32 bits, and Int64 comes back wrapped.
        "WatermarkRowVersion": "" if watermark.row_version is None else str(watermark.row_version),
        "WatermarkOperations": ",".join(sorted(watermark.operations)),
    }


def _watermark(entity: Mapping[str, Any]) -> Watermark | None:
    created = entity.get("WatermarkOn")
    if not isinstance(created, datetime):
        return None
    row_version = str(entity.get("WatermarkRowVersion") or "")
    operations = {part for part in str(entity.get("WatermarkOperations", "")).split(",") if part}
    return Watermark(created, int(row_version) if row_version.isdigit() else None, operations)
