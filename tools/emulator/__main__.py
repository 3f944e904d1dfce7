"""Run the Dataverse Web API emulator on loopback:

    python -m tools.emulator [--port 8765] [--database emulator.db] [--latency 0.05]

Point the app at it with DATAVERSE_URL=http://127.0.0.1:8765 and any bearer token.
"""

from __future__ import annotations

import argparse

import uvicorn

from tools.emulator import DataverseEmulator


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
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.port}"
    emulator = DataverseEmulator(database=args.database, environment_url=url, latency=args.latency)
    print(f"Dataverse Web API emulator at {url}/api/data/v9.2/ (any bearer token)")
    uvicorn.run(emulator, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
