"""Run the Dataverse Web API emulator on loopback:

    python -m tools.emulator [--port 8765] [--database emulator.db] [--latency 0.05]

Point the app at it with DATAVERSE_URL=http://127.0.0.1:8765 and any bearer token.
"""

from __future__ import annotations

import argparse

import uvicorn

from tools.emulator import DataverseEmulator
from tools.emulator.limits import ServiceProtection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.emulator",
        description="A Dataverse Web API emulator on loopback, serving the tables of tables.toml.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    parser.add_argument(
        "--database", default=":memory:", help="SQLite file that keeps rows (default: memory)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every request (default: 0)"
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help="enforce Dataverse's service protection limits per user (tools/emulator/limits.py)",
    )
    parser.add_argument(
        "--window", type=float, default=300.0, help="the limits' sliding window, s (default 300)"
    )
    parser.add_argument(
        "--request-limit", type=int, default=6000, help="requests per window (default 6000)"
    )
    parser.add_argument(
        "--execution-ms",
        type=float,
        default=1_200_000.0,
        help="execution time per window, ms (default 1,200,000)",
    )
    parser.add_argument(
        "--cost-ms", type=float, default=20.0, help="execution time of one operation, ms"
    )
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.port}"
    limits = (
        ServiceProtection(
            requests=args.request_limit,
            execution_ms=args.execution_ms,
            window_seconds=args.window,
            cost_ms=args.cost_ms,
        )
        if args.limits
        else None
    )
    emulator = DataverseEmulator(
        database=args.database, environment_url=url, latency=args.latency, limits=limits
    )
    print(f"Dataverse Web API emulator at {url}/api/data/v9.2/ (any bearer token)")
    uvicorn.run(emulator, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
