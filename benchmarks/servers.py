"""Processes the benchmarks start beside themselves: free loopback ports, waiting for a server
to listen, and the Dataverse emulator in its own process (so that the benchmark's CPU time is
the client's alone)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential

ROOT = Path(__file__).resolve().parents[1]


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


@contextmanager
def azurite_running() -> Iterator[str]:
    """The connection string of the Azurite scripts/test started (AZURITE_CONNECTION_STRING),
    or of one started here on free ports with a key made for this run (npm ci installs it);
    never whatever listens on Azurite's usual ports."""
    if os.environ.get("AZURITE_CONNECTION_STRING"):
        yield os.environ["AZURITE_CONNECTION_STRING"]
        return
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise SystemExit("Azurite is not installed: run `npm ci` in the repository first")
    blob, queue, table = free_ports(3)
    key = base64.b64encode(os.urandom(64)).decode()
    process = subprocess.Popen(
        [str(binary), "--silent", "--inMemoryPersistence", "--disableTelemetry",
         "--skipApiVersionCheck", "--blobHost", "127.0.0.1", "--blobPort", str(blob),
         "--queueHost", "127.0.0.1", "--queuePort", str(queue),
         "--tableHost", "127.0.0.1", "--tablePort", str(table)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AZURITE_ACCOUNTS": f"devstoreaccount1:{key}"},
    )  # fmt: skip
    endpoints = ";".join(
        f"{kind}Endpoint=http://127.0.0.1:{port}/devstoreaccount1"
        for kind, port in (("Blob", blob), ("Queue", queue), ("Table", table))
    )
    try:
        wait_for(table, process, "Azurite")
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={key};{endpoints}"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def sdk_credential(token: str = "app") -> AsyncTokenCredential:
    """An `AsyncTokenCredential` for Microsoft's SDK against the emulator, which takes any
    bearer token (the SDK refuses anything that is not one)."""
    from azure.core.credentials import AccessToken

    class Token(AsyncTokenCredential):
        async def get_token(self, *scopes: str, **options: object) -> AccessToken:
            return AccessToken(token, int(time.time()) + 3600)

        async def close(self) -> None:
            return None

        async def __aexit__(self, *_: object) -> None:
            return None

    return Token()
