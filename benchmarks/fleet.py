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
settings swept (2, 4 and 6 per process: the best is printed), (c) the adaptive limit (16 at most,
halving on 429s). Microsoft's PowerPlatform-Dataverse-Client SDK is not driven here yet.

Targets for (c): budget_used >= 0.90 and throttled_share <= 0.01 after warm-up, lost = 0. The last
line is machine-readable: `budget_used=... throttled_share=... lost=... p95_lag_s=...` for (c).

    python -m benchmarks.fleet [--processes 8] [--events 800]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import statistics
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

from benchmarks.servers import emulator_server

WINDOW = 10.0
REQUESTS = 200  # per window: Dataverse's 20 requests/s
LATENCY = 0.05


def limited_emulator() -> AbstractContextManager[str]:
    return emulator_server(
        LATENCY,
        "--limits", "--window", str(WINDOW), "--request-limit", str(REQUESTS),
        "--execution-ms", str(1_200_000 * WINDOW / 300), "--cost-ms", "20",
    )  # fmt: skip


@dataclass
class WorkerResult:
    done: list[float]  # seconds from the start, per applied write
    requests: int
    throttled: int


def worker(
    url: str, events: int, concurrency: int, adaptive: bool, start: float, out: object
) -> None:
    async def run() -> WorkerResult:
        from shared.dataverse import DataverseClient, RetryPolicy
        from shared.errors import DataverseError
        from tools.emulator import AnyToken

        pending: asyncio.Queue[int] = asyncio.Queue()
        for n in range(events):
            pending.put_nowait(n)
        done: list[float] = []
        async with DataverseClient(
            url,
            auth=AnyToken("app"),
            max_concurrency=concurrency,
            adaptive_concurrency=adaptive,
            retry=RetryPolicy(budget_seconds=10, max_pause_seconds=10),
        ) as client:

            async def consume() -> None:
                while True:
                    try:
                        n = pending.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    try:
                        await client.create("accounts", {"name": f"e{n}"})
                        done.append(time.time() - start)
                    except DataverseError:
                        await asyncio.sleep(1.0)  # redelivered later, as the broker would
                        pending.put_nowait(n)

            await asyncio.gather(*(consume() for _ in range(16)))  # host.json's 16 per instance
            return WorkerResult(done, client.requests_sent, client.concurrency.throttled)

    result = asyncio.run(run())
    out.put((result.done, result.requests, result.throttled))  # type: ignore[attr-defined]


@dataclass
class FleetResult:
    name: str
    seconds: float
    applied: int
    requests: int
    throttled: int
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
        return self.throttled / self.requests if self.requests else 0.0

    def line(self) -> str:
        return (
            f"  {self.name:<22} {self.seconds:6.1f} s  budget used {self.budget_used:5.0%}  "
            f"429s {self.throttled_share:5.1%}  lost {self.events - self.applied}  "
            f"p95 lag {self.p95_lag:5.1f} s"
        )


def fleet(name: str, processes: int, events: int, concurrency: int, adaptive: bool) -> FleetResult:
    with limited_emulator() as url:
        out: multiprocessing.Queue[tuple[list[float], int, int]] = multiprocessing.Queue()
        start = time.time()
        share = events // processes
        workers = [
            multiprocessing.Process(
                target=worker, args=(url, share, concurrency, adaptive, start, out)
            )
            for _ in range(processes)
        ]
        for process in workers:
            process.start()
        results = [out.get(timeout=600) for _ in workers]
        for process in workers:
            process.join()
        seconds = time.time() - start
    done = sorted(t for times, _, _ in results for t in times)
    p95 = statistics.quantiles(done, n=20)[-1] if len(done) >= 20 else (done[-1] if done else 0)
    return FleetResult(
        name,
        seconds,
        len(done),
        sum(r for _, r, _ in results),
        sum(t for _, _, t in results),
        p95,
        share * processes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8, help="app processes in the fleet")
    parser.add_argument("--events", type=int, default=800, help="the backlog to drain")
    args = parser.parse_args()
    print(
        f"{args.processes} processes drain {args.events} events against {REQUESTS} requests per "
        f"{WINDOW:.0f} s and 52 in flight ({LATENCY * 1000:.0f} ms a request)"
    )
    fixed = fleet("(a) fixed 16", args.processes, args.events, 16, adaptive=False)
    print(fixed.line())
    sweep = [fleet(f"(b) static {c}", args.processes, args.events, c, False) for c in (2, 4, 6)]
    for result in sweep:
        print(result.line())
    best = min(sweep, key=lambda result: result.seconds)
    adaptive = fleet("(c) adaptive <= 16", args.processes, args.events, 16, adaptive=True)
    print(adaptive.line())
    met = adaptive.budget_used >= 0.9 and adaptive.throttled_share <= 0.01
    verdict = "met" if met and adaptive.applied == adaptive.events else "NOT met"
    print(
        f"best static: {best.name.split()[-1]} per process; (c) targets budget_used >= 0.90, "
        f"throttled_share <= 0.01, lost = 0: {verdict}"
    )
    print(
        f"budget_used={adaptive.budget_used:.2f} throttled_share={adaptive.throttled_share:.3f} "
        f"lost={adaptive.events - adaptive.applied} p95_lag_s={adaptive.p95_lag:.1f}"
    )


if __name__ == "__main__":
    main()
