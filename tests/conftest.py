"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CONTEXTS = FIXTURES / "contexts"


def context_bytes(name: str) -> bytes:
    """A context fixture by file name, e.g. `account-create.json`."""
    return (CONTEXTS / name).read_bytes()


@pytest.fixture(autouse=True)
def _cold_decoder_caches() -> None:
    # Each test decodes as a fresh process would: no GUID or date memoised by another test.
    from shared.context import values

    values.clear_caches()


AZURITE = "UseDevelopmentStorage=true"


def _azurite_listening() -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", 10000)) == 0


@pytest.fixture(scope="session")
def azurite() -> str:
    """The Azurite connection string. scripts/test and .ci/run start Azurite; without it these
    tests skip on a developer's machine and fail in CI, where skipping would hide them."""
    import os

    if not _azurite_listening():
        message = "Azurite is not listening on 127.0.0.1:10000 (scripts/test starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AZURITE
