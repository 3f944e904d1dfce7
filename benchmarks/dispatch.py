"""What the dispatcher costs per message, and what parallel Event Hub batches buy.

(a) Overhead: decode + organization and loop guards + route + idempotency claim, with a no-op
    handler and the in-memory store, per message, as a ratio to orjson.loads of the same bodies
    (the decode benchmark's corpus; every body a distinct operation, so no claim is a
    duplicate). Target <= 2.5x.
(b) Event Hub batch: 100 events over 50 rows, each handler making one write with 50 ms injected
    latency, processed as the trigger does (rows in parallel, in order within a row) versus one
    event after another. Target >= 8x.
The last line is machine-readable.

    python -m benchmarks.dispatch
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any
from uuid import UUID

import httpx
import orjson

from benchmarks.decode import corpus
from shared.context import values
from shared.dataverse import DataverseClient
from shared.dispatch import Completed, Dispatcher
from shared.eventhub import process_batch
from shared.events import DataverseEvent
from shared.poison import InMemoryPoisonStore
from shared.routing import Router
from shared.settings import Settings
from tests.conftest import CONTEXTS
from tools.emulator import AnyToken, DataverseEmulator

ORGANIZATION = "0f000000-0000-4000-8000-0000000000aa"
SETTINGS = Settings(allowed_organizations=frozenset({ORGANIZATION}))


def variants(copies: int) -> list[bytes]:
    """Each message of the decode benchmark's corpus (the project's fixtures, plus the team's
    public captures when they sit beside the repository) `copies` times, each copy another
    operation of our organization."""
    bodies = []
    for index, (_, body) in enumerate(corpus()):
        tree = orjson.loads(body.decode("utf-8-sig"))
        tree["OrganizationId"] = ORGANIZATION
        for copy in range(copies):
            tree["OperationId"] = str(UUID(int=(index << 32) + copy + 1))
            bodies.append(orjson.dumps(tree))
    return bodies


async def overhead(copies: int, rounds: int) -> float:
    router = Router()

    @router.on(entity="*", message="*")
    async def no_op(context: Any, dataverse: Any) -> None:
        return None

    bodies = variants(copies)
    unused_client = DataverseClient("https://contoso.crm.dynamics.com", auth=AnyToken())
    best_base = best_dispatch = float("inf")
    for _ in range(rounds):
        values.clear_caches()
        gc.collect()  # both sides start from the same heap
        started = time.perf_counter()
        for body in bodies:
            orjson.loads(body)
        best_base = min(best_base, time.perf_counter() - started)
        dispatcher = Dispatcher(router, unused_client, SETTINGS)
        values.clear_caches()
        gc.collect()
        started = time.perf_counter()
        # As the trigger does: an event per message, let go once processed (keeping them all
        # alive would only measure the garbage collector walking a growing heap).
        for body in bodies:
            outcome = await dispatcher.process(
                DataverseEvent(body=body, content_type="application/json")
            )
        best_dispatch = min(best_dispatch, time.perf_counter() - started)
        assert isinstance(outcome, Completed)
        assert outcome.handlers
    return best_dispatch / best_base


def row_event(row: int, sequence: int) -> DataverseEvent:
    tree = orjson.loads((CONTEXTS / "account-update-truncated.json").read_bytes())
    tree["PrimaryEntityId"] = str(UUID(int=row + 1))
    tree["OperationId"] = str(UUID(int=1000 * (row + 1) + sequence))
    return DataverseEvent(body=orjson.dumps(tree), content_type="application/json")


async def event_hub(events_count: int, rows: int, latency: float) -> tuple[float, float]:
    router = Router()

    @router.on(entity="account", message="Update")
    async def write_back(context: Any, dataverse: DataverseClient) -> None:
        await dataverse.upsert("accounts", context.primary_entity_id, {"name": "seen"})

    async def run(parallel: bool) -> float:
        emulator = DataverseEmulator(latency=latency)
        client = DataverseClient(
            "https://contoso.crm.dynamics.com",
            auth=AnyToken(),
            transport=httpx.ASGITransport(app=emulator),
            max_concurrency=SETTINGS.max_concurrency,
        )
        dispatcher = Dispatcher(router, client, SETTINGS)
        events = [row_event(index % rows, index // rows) for index in range(events_count)]
        started = time.perf_counter()
        if parallel:
            await process_batch(
                dispatcher, events, InMemoryPoisonStore(), partition="0", final_attempt=True
            )
        else:
            for event in events:
                await dispatcher.process(event)
        elapsed = time.perf_counter() - started
        assert len(emulator.requests) == events_count
        await client.aclose()
        return elapsed

    return await run(parallel=False), await run(parallel=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=60, help="operations per message in (a)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    parser.add_argument("--events", type=int, default=100, help="events in the write-back run")
    parser.add_argument("--rows", type=int, default=50, help="rows those events change")
    parser.add_argument("--latency", type=float, default=0.05, help="emulated seconds per request")
    args = parser.parse_args()
    ratio = await overhead(args.copies, args.rounds)
    print(f"(a) corpus: {len(corpus())} messages x {args.copies} operations")
    print(f"(a) dispatch overhead: {ratio:.2f}x orjson.loads of the same bodies (target <= 2.5x)")
    sequential, parallel = await event_hub(args.events, args.rows, args.latency)
    speedup = sequential / parallel
    print(
        f"(b) Event Hub batch of {args.events} events over {args.rows} rows, "
        f"{args.latency * 1000:.0f} ms per write: sequential {sequential:.2f} s, "
        f"batch {parallel:.2f} s, {speedup:.1f}x (target >= 8x)"
    )
    print(f"overhead_ratio={ratio:.2f} eventhub_speedup={speedup:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
