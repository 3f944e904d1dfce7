"""Processes the benchmarks start beside themselves: free loopback ports, waiting for a server
to listen, and the Dataverse emulator in its own process (so that the benchmark's CPU time is
the client's alone)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def wait_for(port: int, process: subprocess.Popen[bytes], what: str, seconds: float = 20) -> None:
    """Until `port` takes connections; exits when the process dies or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


@contextmanager
def emulator_server(latency: float, *options: str) -> Iterator[str]:
    """`python -m tools.emulator` on a free port, with `options` (e.g. its --limits)."""
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "tools.emulator", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--latency", str(latency), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port, process, "the emulator")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
