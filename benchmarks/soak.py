"""A fault-injection soak: does every effect happen once, and never from a stale event?

In one process, with loopback only:
- N events (default 10,000) over a few hundred rows, each a contact Update with a rising row
  version; delivered with 20% duplicates (redeliveries at random later points) and 10% reordered
  (a row's event delivered before its predecessor);
- several instances (dispatchers with their own store objects) sharing one idempotency table on
  Azurite, taking deliveries from one queue; a Retry puts the delivery back at the end;
- the Dataverse emulator failing 10% of requests with 429 or 503;
- two handlers that crash at random, before or after their write: `record_effect` upserts one
  effect row per event; `keep_latest` (ordered) writes the row's latest sequence.

A ledger kept outside the app tells what happened: an effect is lost if its event has no effect
row at the end, doubled if a handler started again for an event whose run had completed, and
stale if the ordered handler started for an event older than one it had completed for that row.
Targets: 0 lost, 0 doubled, 0 stale applied. It starts Azurite itself when none is listening.

    python -m benchmarks.soak [--events 10000] [--rows 300] [--instances 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import httpx
import orjson
from azure.data.tables.aio import TableClient

from shared.dataverse import DataverseClient, RetryPolicy
from shared.dispatch import DeadLetter, Dispatcher, Retry
from shared.events import DataverseEvent
from shared.idempotency_table import TableIdempotencyStore
from shared.routing import Router
from shared.settings import Settings
from tools.emulator import AnyToken, DataverseEmulator

ROOT = Path(__file__).resolve().parents[1]
AZURITE = "UseDevelopmentStorage=true"
ORGANIZATION = "0f000000-0000-4000-8000-0000000000aa"
STEP = "57e90000-0000-4000-8000-00000000beef"
EFFECTS = uuid5(UUID(int=0), "soak-effects")


class SoakCrash(RuntimeError):
    """A handler dying at a random point (the dispatcher retries it, as for any bug)."""


@dataclass
class Ledger:
    """What actually happened, kept outside the app under test."""

    runs: int = 0
    crashes: int = 0
    completed: set[tuple[str, str]] = field(default_factory=set)  # (handler, event)
    doubled: int = 0
    latest_completed: dict[str, int] = field(default_factory=dict)  # row -> sequence
    stale_applied: int = 0

    def start(self, handler: str, event: str) -> None:
        self.runs += 1
        if (handler, event) in self.completed:
            self.doubled += 1

    def finish(self, handler: str, event: str) -> None:
        self.completed.add((handler, event))


def soak_router(ledger: Ledger, rng: random.Random, crash_rate: float) -> Router:
    router = Router()

    def maybe_crash(where: str) -> None:
        if rng.random() < crash_rate:
            ledger.crashes += 1
            raise SoakCrash(f"crashed {where} the write")

    @router.on(entity="contact", message="Update")
    async def record_effect(context: Any, dataverse: DataverseClient) -> None:
        event = str(context.operation_id)
        ledger.start("effect", event)
        maybe_crash("before")
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
        if sequence < ledger.latest_completed.get(row, 0):
            ledger.stale_applied += 1
        maybe_crash("before")
        await dataverse.upsert(
            "contacts", context.primary_entity_id, {"contoso_sequence": sequence}
        )
        maybe_crash("after")
        ledger.finish("latest", event)
        ledger.latest_completed[row] = max(ledger.latest_completed.get(row, 0), sequence)

    return router


def make_events(count: int, rows: int) -> list[tuple[str, int, bytes]]:
    """(row, sequence, body) in causal order: every row's changes in sequence."""
    template = orjson.loads(
        (ROOT / "tests" / "fixtures" / "contexts" / "contact-update.json").read_bytes()
    )
    template["OwningExtension"]["Id"] = STEP
    template["OrganizationId"] = ORGANIZATION
    events = []
    for index in range(count):
        row, sequence = index % rows, index // rows + 1
        row_id = str(UUID(int=row + 1))
        tree = dict(template)
        tree["PrimaryEntityId"] = row_id
        tree["OperationId"] = str(uuid4())
        tree["OperationCreatedOn"] = f"/Date({1735689600000 + sequence * 1000})/"
        tree["InputParameters"] = [
            {
                "key": "Target",
                "value": {
                    "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                    "Attributes": [{"key": "contoso_sequence", "value": sequence}],
                    "Id": row_id,
                    "LogicalName": "contact",
                    "RowVersion": str(1000 + sequence),
                },
            }
        ]
        tree["PostEntityImages"] = []
        tree["PreEntityImages"] = []
        events.append((row_id, sequence, orjson.dumps(tree)))
    return events


def deliveries(
    events: list[tuple[str, int, bytes]], rng: random.Random, duplicates: float, reordered: float
) -> list[int]:
    """Indexes into `events` in delivery order."""
    order = list(range(len(events)))
    by_row: dict[str, list[int]] = {}
    for index in order:
        by_row.setdefault(events[index][0], []).append(index)
    position = {index: place for place, index in enumerate(order)}
    for indexes in by_row.values():
        for earlier, later in itertools.pairwise(indexes):
            if rng.random() < reordered:  # the later change overtakes the earlier one
                a, b = position[earlier], position[later]
                order[a], order[b] = order[b], order[a]
                position[earlier], position[later] = b, a
    for index in list(order):
        if rng.random() < duplicates:
            order.insert(rng.randrange(position[index] + 1, len(order) + 1), index)
            position = {value: place for place, value in enumerate(order)}
    return order


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def azurite_running() -> Iterator[None]:
    """Use the Azurite that is listening, or start the project's own (npm ci installs it)."""
    if _listening(10002):
        yield
        return
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise SystemExit("Azurite is not installed: run `npm ci` in the repository first")
    process = subprocess.Popen(
        [
            str(binary),
            "--silent",
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
            "--queueHost",
            "127.0.0.1",
            "--tableHost",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening(10002):
            if time.monotonic() > deadline:
                raise SystemExit("Azurite did not start")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class SoakResult:
    events: int
    deliveries: int
    handler_runs: int
    crashes: int
    effects_applied: int
    effects_expected: int
    lost: int
    doubled: int
    stale_applied: int
    rows_behind: int
    dead_letters: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


async def soak(
    events_count: int = 10_000,
    rows: int = 300,
    instances: int = 8,
    *,
    seed: int = 7,
    fault_rate: float = 0.10,
    crash_rate: float = 0.05,
    duplicates: float = 0.20,
    reordered: float = 0.10,
) -> SoakResult:
    rng = random.Random(seed)
    ledger = Ledger()
    router = soak_router(ledger, rng, crash_rate)
    emulator = DataverseEmulator(seed=seed)
    emulator.add_table("contoso_effect")
    emulator.random_faults(fault_rate, statuses=(429, 503), retry_after=0.01)
    events = make_events(events_count, rows)
    schedule = deliveries(events, rng, duplicates, reordered)
    table = f"soak{uuid4().hex[:12]}"
    settings = Settings(allowed_organizations=frozenset({ORGANIZATION}))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in schedule:
        queue.put_nowait(index)
    pending = len(schedule)
    delivered = dead = 0
    done = asyncio.Event()
    stores: list[TableIdempotencyStore] = []
    clients: list[DataverseClient] = []

    async def worker() -> None:
        nonlocal pending, delivered, dead
        store = TableIdempotencyStore(TableClient.from_connection_string(AZURITE, table_name=table))
        client = DataverseClient(
            "https://contoso.crm.dynamics.com",
            auth=AnyToken(),
            transport=httpx.ASGITransport(app=emulator),
            retry=RetryPolicy(
                budget_seconds=1.0, backoff_base_seconds=0.005, backoff_cap_seconds=0.05
            ),
            max_concurrency=4,
        )
        stores.append(store)
        clients.append(client)
        dispatcher = Dispatcher(router, client, settings, idempotency=store)
        while not done.is_set():
            try:
                index = await asyncio.wait_for(queue.get(), timeout=0.2)
            except TimeoutError:
                continue
            delivered += 1
            outcome = await dispatcher.process(
                DataverseEvent(body=events[index][2], content_type="application/json")
            )
            if isinstance(outcome, Retry):
                queue.put_nowait(index)  # abandoned: the broker delivers it again later
                continue
            if isinstance(outcome, DeadLetter):
                dead += 1
            pending -= 1
            if pending == 0:
                done.set()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(instances)))
    seconds = time.perf_counter() - started

    applied = {row["contoso_event"] for row in emulator.rows("contoso_effects")}
    expected = {str(orjson.loads(body)["OperationId"]) for _, _, body in events}
    latest = {row["contactid"]: row.get("contoso_sequence") for row in emulator.rows("contacts")}
    newest: dict[str, int] = {}
    for row, sequence, _ in events:
        newest[row] = max(newest.get(row, 0), sequence)
    behind = sum(1 for row, sequence in newest.items() if latest.get(row) != sequence)
    for resource in (*stores, *clients):
        await resource.close() if hasattr(resource, "close") else await resource.aclose()  # type: ignore[attr-defined]
    cleanup = TableClient.from_connection_string(AZURITE, table_name=table)
    await cleanup.delete_table()
    await cleanup.close()
    return SoakResult(
        events=events_count,
        deliveries=delivered,
        handler_runs=ledger.runs,
        crashes=ledger.crashes,
        effects_applied=len(applied & expected),
        effects_expected=len(expected),
        lost=len(expected - applied) + behind,
        doubled=ledger.doubled,
        stale_applied=ledger.stale_applied,
        rows_behind=behind,
        dead_letters=dead,
        seconds=seconds,
    )


def report(result: SoakResult) -> str:
    rows = [
        ("events", result.events),
        ("deliveries", result.deliveries),
        ("handler runs", result.handler_runs),
        ("handler crashes (injected)", result.crashes),
        ("effects applied", result.effects_applied),
        ("effects expected", result.effects_expected),
        ("lost", result.lost),
        ("doubled", result.doubled),
        ("stale applied", result.stale_applied),
        ("rows behind their latest change", result.rows_behind),
        ("dead letters", result.dead_letters),
        ("throughput (events/s)", f"{result.events_per_s:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(
        f"events={result.events} lost={result.lost} doubled={result.doubled} "
        f"stale_applied={result.stale_applied} events_per_s={result.events_per_s:.1f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # The handlers crash on purpose, hundreds of times; their stack traces would drown the table.
    logging.disable(logging.ERROR)
    with azurite_running():
        result = asyncio.run(soak(args.events, args.rows, args.instances, seed=args.seed))
    print(report(result))


if __name__ == "__main__":
    main()
