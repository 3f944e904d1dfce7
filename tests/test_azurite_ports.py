"""The suite's storage is the Azurite this run started, on ports chosen per run: a foreign
listener on Azurite's usual ports is never taken for it (it once made 14 tests skip quietly)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.conftest import azurite_connection

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def foreign_listener() -> Iterator[int]:
    """Something that is not Azurite, holding 10000 when it is free (else any port)."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 10000))
    except OSError:
        listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_without_the_runs_azurite_the_storage_tests_skip_or_fail_never_probe(
    foreign_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURITE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(Skipped):
        azurite_connection()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed):
        azurite_connection()


@pytest.mark.skipif(
    not (ROOT / "node_modules" / ".bin" / "azurite").exists(), reason="npm ci installs Azurite"
)
def test_the_script_starts_its_own_azurite_beside_a_foreign_listener(foreign_listener: int) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "AZURITE_CONNECTION_STRING"}
    environment["VENV"] = str(Path(sys.executable).parents[1])
    script = 'source scripts/lib.sh; ensure_azurite; echo "$AZURITE_CONNECTION_STRING"'
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    connection = done.stdout.strip().splitlines()[-1]
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)/", connection)}
    assert len(ports) == 3
    assert foreign_listener not in ports
    assert "AccountKey=" in connection
    # The script's Azurite stopped with its shell (the EXIT trap): nothing is left listening.
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_the_runs_azurite_is_real_storage(azurite: str) -> None:
    from azure.data.tables.aio import TableServiceClient

    async with TableServiceClient.from_connection_string(azurite) as service:
        name = f"probe{os.getpid()}"
        await service.create_table(name)
        await service.delete_table(name)
    await asyncio.sleep(0)
