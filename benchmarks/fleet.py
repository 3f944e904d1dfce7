"""A fleet against one application user's service protection limits.

N app processes (default 8, each with a client of 16 in flight, host.json's Service Bus
concurrency) drain a backlog of events whose handlers each make one write, against the emulator
in its own process with the limits on. The window is scaled so a run takes seconds: 10 s and
200 requests keep Dataverse's rate (20 requests/s, 6,000 per 300 s); execution time scales
with it (40,000 ms per 10 s); 52 in flight is not windowed and stays. Scaled back, each second
here stands for 30 s of Dataverse's window and a backlog of N for 30 N. A write the client gives
up on (`Throttled`, past its pause budget) goes back to the process's queue, as a broker would
redeliver it.

Compared in one run: (a) today's fixed concurrency (16 per process, not adapting), (b) static
settings swept (2, 4 and 6 per process: the best is printed), (c) the adaptive limit alone (16
at most, halving on 429s), (d) the app's default: the adaptive limit and the request budget
shared in Table storage (Azurite; 200 per window, as Dataverse's 6,000 per 300 s scaled), and (e)
Microsoft's PowerPlatform-Dataverse-Client SDK (async client, 16 creates in flight a process),
which surfaces a 429 to its caller: the worker waits the error's Retry-After and puts the event
back, as a broker would. Install it for benchmarks only: `pip install -r
benchmarks/requirements.txt`; without it (e) is skipped and said so.

Targets for (d): budget_used >= 0.90 and throttled_share <= 0.01 after warm-up (the first
window, when every process starts at once), lost = 0. The last line is machine-readable:
`budget_used=... throttled_share=... lost=... p95_lag_s=...` for (d).

    python -m benchmarks.fleet [--processes 8] [--events 800]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from benchmarks.servers import azurite_running, emulator_server, sdk_credential

WINDOW = 10.0
REQUESTS = 200  # per window: Dataverse's 20 requests/s
LATENCY = 0.05
TABLE = "fleetbudget"


def limited_emulator() -> AbstractContextManager[str]:
    return emulator_server(
        LATENCY,
        "--limits", "--window", str(WINDOW), "--request-limit", str(REQUESTS),
        "--execution-ms", str(1_200_000 * WINDOW / 300), "--cost-ms", "20",
    )  # fmt: skip


@dataclass(frozen=True)
class Config:
    name: str
    concurrency: int = 16
    adaptive: bool = True
    storage: str | None = None  # the Azurite connection string: the shared request budget
    sdk: bool = False


@dataclass
class WorkerResult:
    done: list[float]  # seconds from the start, per applied write
    requests: int
    throttled: int
    warm_requests: int  # the counts when the first window ended
    warm_throttled: int


class Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.throttled = 0
        self.warm = (0, 0)

    async def mark_warm(self, start: float, read: Callable[[], tuple[int, int]]) -> None:
        await asyncio.sleep(max(0.0, start + WINDOW - time.time()))
        self.warm = read()


async def backlog(
    events: int,
    consumers: int,
    write: Callable[[int], Awaitable[float | None]],
    start: float,
    counts: Counts,
    read: Callable[[], tuple[int, int]],
) -> list[float]:
    """`consumers` tasks drain events 0..events-1 through `write`, which returns None once the
    write is applied, else the seconds to wait before the event is put back (as a broker
    redelivers it). Returns when each write was applied, in seconds from `start`; the counts
    `read` returns are noted when the first window ends."""
    pending: asyncio.Queue[int] = asyncio.Queue()
    for n in range(events):
        pending.put_nowait(n)
    done: list[float] = []
    await asyncio.sleep(max(0.0, start - time.time()))  # every process starts together

    async def consume() -> None:
        while True:
            try:
                n = pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            wait = await write(n)
            if wait is None:
                done.append(time.time() - start)
            else:
                await asyncio.sleep(wait)
                pending.put_nowait(n)

    warm = asyncio.create_task(counts.mark_warm(start, read))
    await asyncio.gather(*(consume() for _ in range(consumers)))
    warm.cancel()
    return done


async def drain_ours(url: str, events: int, config: Config, start: float) -> WorkerResult:
    from shared.dataverse import DataverseClient, RetryPolicy
    from shared.dataverse.budget import SharedBudget, TableRing
    from shared.errors import DataverseError
    from tools.emulator import AnyToken

    budget = None
    if config.storage:
        from azure.data.tables.aio import TableClient

        table = TableClient.from_connection_string(config.storage, table_name=TABLE)
        budget = SharedBudget(TableRing(table, "fleet"), requests=REQUESTS, window_seconds=WINDOW)
    counts = Counts()
    async with DataverseClient(
        url,
        auth=AnyToken("app"),
        max_concurrency=config.concurrency,
        adaptive_concurrency=config.adaptive,
        budget=budget,
        retry=RetryPolicy(budget_seconds=10, max_pause_seconds=10),
    ) as client:

        async def write(n: int) -> float | None:
            try:
                await client.create("accounts", {"name": f"e{n}"})
            except DataverseError:
                return 1.0
            return None

        def read() -> tuple[int, int]:
            return client.requests_sent, client.concurrency.throttled

        # host.json's 16 messages per instance
        done = await backlog(events, 16, write, start, counts, read)
        result = WorkerResult(done, *read(), *counts.warm)
    if budget is not None:
        await table.close()
    return result


async def drain_sdk(url: str, events: int, config: Config, start: float) -> WorkerResult:
    """Microsoft's SDK, as its README shows it, 16 creates in flight; a 429 it raises is waited
    out (its Retry-After) and the event put back, as the broker would redeliver it."""
    from PowerPlatform.Dataverse.aio.async_client import AsyncDataverseClient
    from PowerPlatform.Dataverse.core.errors import HttpError

    counts = Counts()
    async with AsyncDataverseClient(url, sdk_credential()) as client:

        async def write(n: int) -> float | None:
            counts.requests += 1
            try:
                await client.records.create("account", {"name": f"e{n}"})
            except HttpError as error:
                if error.status_code == 429:
                    counts.throttled += 1
                return float(getattr(error, "retry_after", None) or 1.0)
            return None

        def read() -> tuple[int, int]:
            return counts.requests, counts.throttled

        done = await backlog(events, config.concurrency, write, start, counts, read)
    return WorkerResult(done, *read(), *counts.warm)


def worker(url: str, events: int, config: Config, start: float, out: object) -> None:
    drain = drain_sdk if config.sdk else drain_ours
    result = asyncio.run(drain(url, events, config, start))
    out.put(result)  # type: ignore[attr-defined]


@dataclass
class FleetResult:
    name: str
    seconds: float
    applied: int
    requests: int
    throttled: int
    warm_requests: int
    warm_throttled: int
    p95_lag: float
    events: int

    @property
    def budget_used(self) -> float:
        """Writes applied over the most a sliding window allows in that time (one full window
        per started window length)."""
        allowed = REQUESTS * math.ceil(self.seconds / WINDOW)
        return self.applied / allowed if allowed else 0.0

    @property
    def throttled_share(self) -> float:
        """429s over requests after warm-up (the first window)."""
        requests = self.requests - self.warm_requests
        return (self.throttled - self.warm_throttled) / requests if requests else 0.0

    @property
    def throttled_share_all(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    def line(self) -> str:
        return (
            f"  {self.name:<24} {self.seconds:6.1f} s  budget used {self.budget_used:5.0%}  "
            f"429s {self.throttled_share:5.1%} after warm-up ({self.throttled_share_all:5.1%} "
            f"all)  lost {self.events - self.applied}  p95 lag {self.p95_lag:5.1f} s"
        )


def fleet(processes: int, events: int, config: Config) -> FleetResult:
    with limited_emulator() as url:
        out: multiprocessing.Queue[WorkerResult] = multiprocessing.Queue()
        start = time.time() + 1.0  # every process starts together, once imported
        share = events // processes
        workers = [
            multiprocessing.Process(target=worker, args=(url, share, config, start, out))
            for _ in range(processes)
        ]
        for process in workers:
            process.start()
        results = [out.get(timeout=600) for _ in workers]
        for process in workers:
            process.join()
        seconds = time.time() - start
    done = sorted(t for result in results for t in result.done)
    p95 = statistics.quantiles(done, n=20)[-1] if len(done) >= 20 else (done[-1] if done else 0)
    return FleetResult(
        config.name,
        seconds,
        len(done),
        sum(result.requests for result in results),
        sum(result.throttled for result in results),
        sum(result.warm_requests for result in results),
        sum(result.warm_throttled for result in results),
        p95,
        share * processes,
    )


def sdk_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("PowerPlatform") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8, help="app processes in the fleet")
    parser.add_argument("--events", type=int, default=800, help="the backlog to drain")
    parser.add_argument("--skip-sweep", action="store_true", help="leave out (b), the sweep")
    args = parser.parse_args()
    print(
        f"{args.processes} processes drain {args.events} events against {REQUESTS} requests per "
        f"{WINDOW:.0f} s and 52 in flight ({LATENCY * 1000:.0f} ms a request)"
    )

    def run(config: Config) -> FleetResult:
        result = fleet(args.processes, args.events, config)
        print(result.line(), flush=True)
        return result

    run(Config("(a) fixed 16", adaptive=False))
    if not args.skip_sweep:
        sweep = [run(Config(f"(b) static {c}", c, adaptive=False)) for c in (2, 4, 6)]
        best = min(sweep, key=lambda result: result.seconds)
        print(f"  best static: {best.name.split()[-1]} per process")
    run(Config("(c) adaptive <= 16"))
    with azurite_running() as storage:
        shared = run(Config("(d) adaptive + shared", storage=storage))
    if sdk_installed():
        run(Config("(e) Python SDK 1.1.0", sdk=True))
    else:
        print("  (e) skipped: PowerPlatform-Dataverse-Client is not installed")
    met = shared.budget_used >= 0.9 and shared.throttled_share <= 0.01
    verdict = "met" if met and shared.applied == shared.events else "NOT met"
    print(
        "(d) targets budget_used >= 0.90, throttled_share <= 0.01 after warm-up, lost = 0: "
        + verdict
    )
    print(
        f"budget_used={shared.budget_used:.2f} throttled_share={shared.throttled_share:.3f} "
        f"lost={shared.events - shared.applied} p95_lag_s={shared.p95_lag:.1f}"
    )


if __name__ == "__main__":
    main()
