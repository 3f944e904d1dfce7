"""A fault-injection soak: does every effect happen once, never from a stale event, and is no
event dead-lettered while its fault would still clear?

In one process, with loopback only:
- N events (default 10,000) over a few hundred rows, each a contact Update with a rising row
  version; delivered with 20% duplicates (redeliveries at random later points) and 10% reordered
  (a row's event delivered before its predecessor);
- a Service Bus queue modelled as the broker behaves: peek-lock, a 5-minute lock, redelivery
  only when the lock expires (a Retry leaves it locked), a delivery count, MaxDeliveryCount 10;
  each delivery settled by the app's own `handle_message`;
- several instances (dispatchers with their own store objects and clients) sharing one
  idempotency table on Azurite;
- the Dataverse emulator failing 10% of requests with 429 or 503;
- two handlers that crash at random, before or after their write: `record_effect` upserts one
  effect row per event; `keep_latest` (ordered) writes the row's latest sequence;
- the faults of `--faults` (all by default, or a comma-separated list of FAULTS):
  crashes          an instance dies while holding claims (every invocation it runs is cut off)
  complete-errors  5% of Table writes that record a completion fail
  slow-handlers    1% of handler runs take longer than the claim's lease
  clock-skew       one instance's clock runs 120 s ahead
  long-throttle    while the first half of the backlog drains, every 60-180 s a 429 asks for
                   60, 150 or 300 s: beyond a call's 45 s budget, and the last two beyond the
                   120 s a call waits for a pause
  unauthorized     a 10-minute window in which Dataverse answers 401 to every token
  poison-failures  an Event Hubs phase: 1% poison events, 10% transient handler failures, and
                   a poison store refusing half its writes, on the final attempt too

Time is scaled, not simulated: every duration the app knows (lease, skew margin, lock, call
budget, Retry-After, backoff) is kept in its real units, and the clocks and sleeps handed to
the store, the client, the dispatcher and the broker run `--time-scale` times as fast (0.01:
a 300 s lease lasts 3 s). Only the emulator's latency is real time.

A ledger kept outside the app tells what happened: an effect is lost if its event has no effect
row at the end; doubled if a handler started again for an event whose completion the store had
recorded; stale if the ordered handler started for an event older than one recorded as
completed for its row; every dead letter or parked event is premature, since each fault here
clears within the retry window, except the Event Hubs phase's poison events.
Targets: 0 lost, 0 doubled, 0 stale applied, 0 premature dead letters. It starts Azurite itself
when none is listening.

    python -m benchmarks.soak [--events 10000] [--rows 300] [--instances 8] [--faults all]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import httpx
import orjson
from azure.data.tables.aio import TableClient

from shared.dataverse import DataverseClient, RetryPolicy
from shared.deadlines import Deadlines
from shared.dispatch import Dispatcher
from shared.routing import Router
from shared.servicebus import handle_message
from shared.settings import Settings
from tools.emulator import AnyToken, DataverseEmulator

from .servers import azurite_running
from .soak_eventhub import EventHubResult, eventhub_soak
from .soak_events import deliveries, make_events
from .soak_model import (
    CURRENT,
    LEASE_SECONDS,
    MAX_DELIVERY_COUNT,
    ORGANIZATION,
    Broker,
    Instance,
    Ledger,
    LedgerStore,
    ScaledTime,
    Settlements,
    SoakMessage,
)

ROOT = Path(__file__).resolve().parents[1]
EFFECTS = uuid5(UUID(int=0), "soak-effects")

FAULTS = (
    "crashes",
    "complete-errors",
    "slow-handlers",
    "clock-skew",
    "long-throttle",
    "unauthorized",
    "poison-failures",
)


def parse_faults(text: str) -> frozenset[str]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return frozenset(FAULTS)
    if names <= {"none"}:
        return frozenset()
    unknown = names - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from all, none, {FAULTS}")
    return frozenset(names)


class SoakCrash(RuntimeError):
    """A handler dying at a random point (the dispatcher retries it, as for any bug)."""


def soak_router(
    ledger: Ledger,
    rng: random.Random,
    crash_rate: float,
    faults: frozenset[str],
    clock: ScaledTime,
) -> Router:
    router = Router()

    def maybe_crash(where: str) -> None:
        if rng.random() < crash_rate:
            ledger.crashes += 1
            raise SoakCrash(f"crashed {where} the write")

    async def maybe_fail_instance() -> None:
        if "crashes" in faults and rng.random() < 0.004:
            ledger.instance_crashes += 1
            CURRENT.get().crash()
            await asyncio.sleep(0)  # this task too: cancelled here, holding its claim
        if "slow-handlers" in faults and rng.random() < 0.01:
            ledger.slow_runs += 1
            await clock.sleep(LEASE_SECONDS * 1.3)

    @router.on(entity="contact", message="Update")
    async def record_effect(context: Any, dataverse: DataverseClient) -> None:
        event = str(context.operation_id)
        ledger.start("effect", event)
        maybe_crash("before")
        await maybe_fail_instance()
        await dataverse.upsert(
            "contoso_effects",
            uuid5(EFFECTS, event),
            {"contoso_event": event, "contoso_row": str(context.primary_entity_id)},
        )
        maybe_crash("after")
        ledger.finish("effect", event)

    @router.on(entity="contact", message="Update", ordered=True)
    async def keep_latest(context: Any, dataverse: DataverseClient) -> None:
        event = str(context.operation_id)
        row = str(context.primary_entity_id)
        sequence = int(context.target["contoso_sequence"])
        ledger.start("latest", event)
        if sequence < ledger.latest_recorded.get(row, 0):
            ledger.stale_applied += 1
        maybe_crash("before")
        await maybe_fail_instance()
        await dataverse.upsert(
            "contacts", context.primary_entity_id, {"contoso_sequence": sequence}
        )
        maybe_crash("after")
        ledger.finish("latest", event, row, sequence)

    return router


@dataclass
class SoakResult:
    events: int
    faults: frozenset[str]
    deliveries: int
    handler_runs: int
    crashes: int
    instance_crashes: int
    slow_runs: int
    complete_errors: int
    effects_applied: int
    effects_expected: int
    lost: int
    doubled: int
    stale_applied: int
    rows_behind: int
    dead_letters: Counter[str]
    premature_dead_letters: int
    longest_delivery_count: int
    seconds: float
    scaled_seconds: float
    eventhub: EventHubResult | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


async def soak(
    events_count: int = 10_000,
    rows: int = 300,
    instances: int = 8,
    *,
    seed: int = 7,
    faults: frozenset[str] = frozenset(FAULTS),
    concurrency: int = 4,
    time_scale: float = 0.01,
    fault_rate: float = 0.10,
    crash_rate: float = 0.02,
    duplicates: float = 0.20,
    reordered: float = 0.10,
    storage: str | None = None,
) -> SoakResult:
    """`storage`: the Azurite connection string (default: AZURITE_CONNECTION_STRING)."""
    storage = storage or os.environ["AZURITE_CONNECTION_STRING"]
    rng = random.Random(seed)
    clock = ScaledTime(time_scale)
    ledger = Ledger()
    router = soak_router(ledger, rng, crash_rate, faults, clock)
    emulator = DataverseEmulator(seed=seed)
    emulator.add_table("contoso_effect")
    emulator.random_faults(fault_rate, statuses=(429, 503), retry_after=0.01)
    events = make_events(events_count, rows)
    schedule = deliveries(events, rng, duplicates, reordered)
    table = f"soak{uuid4().hex[:12]}"
    settings = Settings(
        allowed_organizations=frozenset({ORGANIZATION}), max_delivery_count=MAX_DELIVERY_COUNT
    )
    broker = Broker(clock)
    for index in schedule:
        broker.send(index)
    dead: Counter[str] = Counter()
    delivered = longest = 0
    resources: list[Any] = []
    history: dict[str, list[str]] = {}  # message -> each delivery's outcome or reason

    async def run_instance(instance: Instance) -> None:
        skew = 120.0 if "clock-skew" in faults and instance.number == 0 else 0.0
        store = LedgerStore(
            TableClient.from_connection_string(storage, table_name=table),
            ledger,
            rng,
            0.05 if "complete-errors" in faults else 0.0,
            lease_seconds=LEASE_SECONDS,
            clock=lambda: clock.wall() + skew,
        )
        client = DataverseClient(
            "https://contoso.crm.dynamics.com",
            auth=AnyToken(),
            transport=httpx.ASGITransport(app=emulator),
            retry=RetryPolicy(),  # the production budget (45 s) and backoff, in scaled time
            max_concurrency=4,
            clock=clock.monotonic,
            sleep=clock.sleep,
        )
        resources.extend((store, client))
        dispatcher = Dispatcher(
            router,
            client,
            settings,
            idempotency=store,
            sleep=clock.sleep,
            deadlines=Deadlines(time_scale=time_scale),
        )
        CURRENT.set(instance)
        await asyncio.gather(*(worker(instance, dispatcher) for _ in range(concurrency)))

    async def worker(instance: Instance, dispatcher: Dispatcher) -> None:
        nonlocal delivered, longest
        while (delivery := await broker.receive()) is not None:
            delivered += 1
            longest = max(longest, delivery.count)
            message = SoakMessage(
                events[delivery.index][2],
                f"m{delivery.index}",
                delivery.count,
                delivery.sequence,
            )
            actions = Settlements()
            task = asyncio.create_task(handle_message(dispatcher, message, actions))
            instance.in_flight.add(task)
            try:
                outcome = await task
                history.setdefault(message.message_id, []).append(
                    getattr(outcome, "reason", type(outcome).__name__)
                )
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
                history.setdefault(message.message_id, []).append("crash")
            except Exception:
                logging.getLogger("soak").exception("settling failed")
            finally:
                instance.in_flight.discard(task)
                ledger.finished.pop(task, None)  # a crash loses what the task had not recorded
            if actions.action in ("complete", "deadletter"):
                if actions.action == "deadletter":
                    dead[actions.reason or "?"] += 1
                    logging.getLogger("soak").warning(
                        "dead-lettered %s after %s: %s",
                        message.message_id,
                        history.get(message.message_id),
                        actions.description,
                    )
                broker.settled()
            else:
                broker.unsettled(delivery)  # left locked: back when the lock expires

    async def fault_windows() -> None:
        """The timed faults: a long Retry-After every 60-180 s, one 10-minute 401 window."""
        started = clock.monotonic()
        unauthorized_at = started + 120.0
        next_throttle = started + 100.0
        while not broker.done.is_set():
            now = clock.monotonic()
            # Throttled while the backlog is a burst: Dataverse answers by load, and a lone
            # straggler at the end would otherwise meet every injected 429 itself.
            burst = broker.outstanding > len(schedule) // 2
            if "long-throttle" in faults and burst and now >= next_throttle:
                emulator.inject(429, retry_after=rng.choice((60, 150, 300)))
                next_throttle = now + rng.uniform(60.0, 180.0)
            if "unauthorized" in faults:
                emulator.refuse_every_token = unauthorized_at <= now < unauthorized_at + 600.0
            await clock.sleep(1.0)
        emulator.refuse_every_token = False

    started = time.perf_counter()
    scaled_start = clock.monotonic()
    await asyncio.gather(
        fault_windows(), *(run_instance(Instance(number)) for number in range(instances))
    )
    seconds = time.perf_counter() - started
    scaled_seconds = clock.monotonic() - scaled_start

    applied = {row["contoso_event"] for row in emulator.rows("contoso_effects")}
    expected = {str(orjson.loads(body)["OperationId"]) for _, _, body in events}
    latest = {row["contactid"]: row.get("contoso_sequence") for row in emulator.rows("contacts")}
    newest: dict[str, int] = {}
    for row, sequence, _ in events:
        newest[row] = max(newest.get(row, 0), sequence)
    behind = sum(1 for row, sequence in newest.items() if latest.get(row) != sequence)
    for resource in resources:
        await resource.close() if hasattr(resource, "close") else await resource.aclose()
    cleanup = TableClient.from_connection_string(storage, table_name=table)
    await cleanup.delete_table()
    await cleanup.close()
    if broker.broker_dead_letters:
        dead["MaxDeliveryCountExceeded"] += broker.broker_dead_letters
    eventhub = (
        await eventhub_soak(max(200, events_count // 10), seed=seed, time_scale=time_scale)
        if "poison-failures" in faults
        else None
    )
    return SoakResult(
        events=events_count,
        faults=faults,
        deliveries=delivered,
        handler_runs=ledger.runs,
        crashes=ledger.crashes,
        instance_crashes=ledger.instance_crashes,
        slow_runs=ledger.slow_runs,
        complete_errors=ledger.complete_errors,
        effects_applied=len(applied & expected),
        effects_expected=len(expected),
        lost=len(expected - applied) + behind + (eventhub.lost if eventhub else 0),
        doubled=ledger.doubled,
        stale_applied=ledger.stale_applied,
        rows_behind=behind,
        dead_letters=dead,
        premature_dead_letters=sum(dead.values()) + (eventhub.premature_parked if eventhub else 0),
        longest_delivery_count=longest,
        seconds=seconds,
        scaled_seconds=scaled_seconds,
        eventhub=eventhub,
    )


def report(result: SoakResult) -> str:
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(result.dead_letters.items()))
    rows: list[tuple[str, object]] = [
        ("faults", ",".join(sorted(result.faults)) or "none"),
        ("events", result.events),
        ("deliveries", result.deliveries),
        ("most deliveries of one message", result.longest_delivery_count),
        ("handler runs", result.handler_runs),
        ("handler crashes (injected)", result.crashes),
        ("instance crashes (injected)", result.instance_crashes),
        ("handlers slower than the lease", result.slow_runs),
        ("completion writes refused", result.complete_errors),
        ("effects applied", result.effects_applied),
        ("effects expected", result.effects_expected),
        ("lost", result.lost),
        ("doubled", result.doubled),
        ("stale applied", result.stale_applied),
        ("rows behind their latest change", result.rows_behind),
        ("dead letters", f"{sum(result.dead_letters.values())} ({reasons or 'none'})"),
        ("premature dead letters", result.premature_dead_letters),
        ("scaled time (s)", f"{result.scaled_seconds:.0f}"),
        ("throughput (events/s, real time)", f"{result.events_per_s:.1f}"),
    ]
    if result.eventhub is not None:
        hub = result.eventhub
        parked = ", ".join(f"{reason} {n}" for reason, n in sorted(hub.parked.items()))
        rows += [
            ("event hubs: events / poison", f"{hub.events} / {hub.poison}"),
            ("event hubs: applied", hub.applied),
            ("event hubs: parked", f"{sum(hub.parked.values())} ({parked or 'none'})"),
            ("event hubs: poison store writes refused", hub.park_failures),
            ("event hubs: invocations", hub.invocations),
            ("event hubs: lost", hub.lost),
        ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(
        f"events={result.events} lost={result.lost} doubled={result.doubled} "
        f"stale_applied={result.stale_applied} "
        f"premature_dead_letters={result.premature_dead_letters} "
        f"events_per_s={result.events_per_s:.1f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults: " + ", ".join(FAULTS),
    )
    parser.add_argument("--events", type=int, default=10_000, help="events to deliver")
    parser.add_argument("--rows", type=int, default=300, help="rows the events change")
    parser.add_argument("--instances", type=int, default=8, help="app instances")
    parser.add_argument("--concurrency", type=int, default=4, help="messages per instance")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument(
        "--faults", default="all", help="all, none, or a comma-separated list of the faults"
    )
    parser.add_argument(
        "--time-scale", type=float, default=0.01, help="real seconds per second the app sees"
    )
    args = parser.parse_args()
    try:
        faults = parse_faults(args.faults)
    except ValueError as error:
        parser.error(str(error))
    # The handlers crash on purpose, hundreds of times; their stack traces would drown the table.
    logging.disable(logging.CRITICAL)
    with azurite_running() as storage:
        result = asyncio.run(
            soak(
                args.events,
                args.rows,
                args.instances,
                seed=args.seed,
                faults=faults,
                concurrency=args.concurrency,
                time_scale=args.time_scale,
                storage=storage,
            )
        )
    print(report(result))


if __name__ == "__main__":
    main()
