"""The idempotency contract, held by both stores: in memory, and in Azure Table Storage on
Azurite (real Table API, conditional writes and all)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from azure.data.tables.aio import TableClient

from shared.idempotency import (
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    LostClaim,
    Position,
    Watermark,
)
from shared.idempotency_table import TableIdempotencyStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Factory = Callable[[], Awaitable[IdempotencyStore]]


@pytest.fixture(params=["memory", "table"])
async def stores(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Factory, Clock]]:
    """A factory of store objects over one shared storage: calling it again is a new process
    (or instance) looking at the same records."""
    clock = Clock()
    if request.param == "memory":
        shared = InMemoryIdempotencyStore(clock=clock, lease_seconds=60)

        async def memory() -> IdempotencyStore:
            return shared

        yield memory, clock
        return
    connection = request.getfixturevalue("azurite")
    table = f"claims{uuid4().hex[:12]}"
    opened: list[TableIdempotencyStore] = []

    async def table_store() -> IdempotencyStore:
        store = TableIdempotencyStore(
            TableClient.from_connection_string(connection, table_name=table),
            clock=clock,
            lease_seconds=60,
        )
        opened.append(store)
        return store

    yield table_store, clock
    cleanup = TableClient.from_connection_string(connection, table_name=table)
    await cleanup.delete_table()
    await cleanup.close()
    for store in opened:
        await store.close()


def position(minute: int, row_version: int | None = None, operation: str | None = None) -> Position:
    created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return Position(created, row_version, operation or f"op-{minute}-{row_version}")


async def test_concurrent_claims_of_one_key_have_exactly_one_winner(
    stores: tuple[Factory, Clock],
) -> None:
    factory, _ = stores
    instances = [await factory() for _ in range(8)]
    claims = await asyncio.gather(*(store.claim("op|step|handler") for store in instances))
    states = [claim.state for claim in claims]
    assert states.count(ClaimState.ACQUIRED) == 1
    assert states.count(ClaimState.IN_PROGRESS) == 7


async def test_a_completed_claim_survives_a_restart(stores: tuple[Factory, Clock]) -> None:
    factory, _ = stores
    first = await factory()
    claim = await first.claim("op-1|step|h")
    await first.complete(claim)
    restarted = await factory()
    assert (await restarted.claim("op-1|step|h")).state is ClaimState.COMPLETED
    assert (await restarted.claim("op-1|step|other")).state is ClaimState.ACQUIRED


async def test_an_expired_lease_is_taken_over(stores: tuple[Factory, Clock]) -> None:
    factory, clock = stores
    crashed = await factory()
    abandoned = await crashed.claim("op-2|step|h")
    assert abandoned.state is ClaimState.ACQUIRED
    other = await factory()
    assert (await other.claim("op-2|step|h")).state is ClaimState.IN_PROGRESS
    # The lease ran out (plus the table store's clock-skew margin): the crashed instance never
    # completed.
    clock.now += 61 + getattr(crashed, "clock_skew_seconds", 0)
    takeover = await other.claim("op-2|step|h")
    assert takeover.state is ClaimState.ACQUIRED
    with pytest.raises(LostClaim):
        await crashed.complete(abandoned)  # too late: it no longer owns the claim
    await other.complete(takeover)
    assert (await crashed.claim("op-2|step|h")).state is ClaimState.COMPLETED


async def test_a_released_claim_can_be_taken_at_once(stores: tuple[Factory, Clock]) -> None:
    factory, _ = stores
    store = await factory()
    claim = await store.claim("op-3|step|h")
    await store.release(claim)
    assert (await store.claim("op-3|step|h")).state is ClaimState.ACQUIRED


async def test_completed_claims_are_purged_after_retention(stores: tuple[Factory, Clock]) -> None:
    factory, clock = stores
    store = await factory()
    for number in range(3):
        await store.complete(await store.claim(f"op-{number}|s|h"))
    assert await store.purge_expired() == 0
    clock.now += 8 * 24 * 3600
    assert await store.purge_expired() == 3
    assert (await store.claim("op-0|s|h")).state is ClaimState.ACQUIRED


async def test_ordered_claims_refuse_what_is_behind_the_watermark(
    stores: tuple[Factory, Clock],
) -> None:
    factory, _ = stores
    store = await factory()
    newer = await store.claim_in_order("account|1", "h", position(10, row_version=200))
    assert newer.state is ClaimState.ACQUIRED
    assert (await store.claim_in_order("account|1", "h", position(11, 201))).state is (
        ClaimState.IN_PROGRESS  # one event of a row at a time
    )
    await store.complete(newer)
    older = await store.claim_in_order("account|1", "h", position(5, row_version=150))
    assert older.state is ClaimState.STALE
    again = await store.claim_in_order("account|1", "h", position(10, row_version=200))
    assert again.state is ClaimState.COMPLETED  # the same event redelivered
    later = await store.claim_in_order("account|1", "h", position(12, row_version=205))
    assert later.state is ClaimState.ACQUIRED
    await store.release(later)  # failed: the watermark stays where it was
    assert (
        await store.claim_in_order("account|1", "h", position(9, 199))
    ).state is ClaimState.STALE
    other_row = await store.claim_in_order("account|2", "h", position(1, 1))
    assert other_row.state is ClaimState.ACQUIRED


async def test_ordering_falls_back_to_posting_time_and_admits_ties(
    stores: tuple[Factory, Clock],
) -> None:
    factory, _ = stores
    store = await factory()
    first = await store.claim_in_order("contact|9", "h", position(3, operation="a"))
    await store.complete(first)
    same_instant = await store.claim_in_order("contact|9", "h", position(3, operation="b"))
    assert same_instant.state is ClaimState.ACQUIRED  # another change at the same instant
    await store.complete(same_instant)
    assert (await store.claim_in_order("contact|9", "h", position(3, operation="a"))).state is (
        ClaimState.COMPLETED
    )
    assert (await store.claim_in_order("contact|9", "h", position(2))).state is ClaimState.STALE


def test_watermark_comparison_rules() -> None:
    mark = Watermark(position(10).created_on, 100, {"x"})
    assert mark.admits(position(1, row_version=101))  # row versions decide over times
    assert not mark.admits(position(20, row_version=99))
    assert mark.admits(position(11))  # no row version: the posting time decides
    assert not mark.admits(position(9))
    assert not mark.admits(Position(position(10).created_on, 100, "x"))
    advanced = mark.advanced_to(Position(position(10).created_on, 100, "y"))
    assert advanced.operations == {"x", "y"}
    assert mark.advanced_to(position(12, 101)).operations == {"op-12-101"}


def test_a_position_comes_from_the_post_image_before_the_target() -> None:
    """Finding: an update sent with If-Match carries in its Target the version the caller read
    (the one before the change); the post image carries the new one. Preferring the Target made
    a newer change tie with an older one."""
    import orjson

    from shared.context import parse_context
    from shared.idempotency import position_of
    from tests.conftest import context_bytes

    tree = orjson.loads(context_bytes("contact-update.json"))
    target = tree["InputParameters"][0]["value"]
    target["RowVersion"] = "147059700"  # what the caller read, sent with If-Match
    newer = parse_context(orjson.dumps(tree))
    assert position_of(newer).row_version == 147059704  # the post image's
    del tree["PostEntityImages"][:]
    without_image = parse_context(orjson.dumps(tree))
    assert position_of(without_image).row_version == 147059700  # the Target's, as a fallback


DAY = 24 * 3600.0


async def test_claims_stranded_in_progress_are_purged_after_retention(
    stores: tuple[Factory, Clock],
) -> None:
    """Finding: purge deleted completed claims only; a claim whose instance died stayed."""
    factory, clock = stores
    store = await factory()
    await store.claim("op-stranded|step|h")  # the instance crashed before completing
    clock.now += 7 * DAY + 1
    assert await store.purge_expired() == 1
    assert await store.purge_expired() == 0


async def test_a_quiet_rows_watermark_outlives_the_queues_message_ttl_then_goes(
    stores: tuple[Factory, Clock],
) -> None:
    """Finding: purge never deleted ordered routes' row records, so the table grew without
    bound. A row record now expires 15 days after its last change: a late event can arrive up
    to the queue's 14-day TTL, and must still meet the watermark."""
    factory, clock = stores
    store = await factory()
    claim = await store.claim_in_order("account|7", "h", position(10, 200))
    await store.complete(claim)
    clock.now += 14 * DAY
    assert await store.purge_expired() == 0
    late = await store.claim_in_order("account|7", "h", position(5, 150))
    assert late.state is ClaimState.STALE  # the watermark is still there to refuse it
    clock.now += 1 * DAY + 1
    assert await store.purge_expired() == 1


async def test_a_context_without_operation_created_on_never_writes_a_date_before_1601(
    stores: tuple[Factory, Clock],
) -> None:
    """Finding: such a context stored year 1, which Azure Tables refuses (Azurite accepts it)."""
    import orjson

    from shared.context import parse_context
    from shared.idempotency import TABLE_EPOCH, position_of
    from tests.conftest import context_bytes

    tree = orjson.loads(context_bytes("contact-update.json"))
    tree.pop("OperationCreatedOn", None)
    first = position_of(parse_context(orjson.dumps(tree)))
    assert first.created_on == TABLE_EPOCH
    factory, _ = stores
    store = await factory()
    claim = await store.claim_in_order("contact|1", "h", Position(first.created_on, None, "a"))
    await store.complete(claim)
    # Another dateless change of the row: a tie in time, so it is admitted, not stale.
    second = await store.claim_in_order("contact|1", "h", Position(first.created_on, None, "b"))
    assert second.state is ClaimState.ACQUIRED
    if isinstance(store, TableIdempotencyStore):
        entity = await store._table.get_entity("order|contact|1", "h")
        assert entity["WatermarkOn"].year >= 1601


async def test_creating_the_table_under_a_table_scoped_role_is_taken_as_it_exists() -> None:
    # The Bicep grants Table Data Contributor on the one table it creates; creating tables is
    # then refused with 403, which must not fail the first claim of every cold start.
    from azure.core.exceptions import HttpResponseError

    from shared.storage import CreateOnce

    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        error = HttpResponseError(message="AuthorizationPermissionMismatch")
        error.status_code = 403
        raise error

    create = CreateOnce(refused)
    await create()
    await create()
    assert calls == 1

    async def broken() -> None:
        error = HttpResponseError(message="ServerBusy")
        error.status_code = 503
        raise error

    with pytest.raises(HttpResponseError):
        await CreateOnce(broken)()
