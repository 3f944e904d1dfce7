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


def azurite_connection() -> str:
    """The connection string of the Azurite that scripts/test (and .ci/run) started for this
    run, on ports it chose and with a key it made: never whatever happens to listen on
    127.0.0.1:10000. Without it these tests skip on a developer's machine and fail in CI,
    where skipping would hide them."""
    import os

    connection = os.environ.get("AZURITE_CONNECTION_STRING", "")
    if not connection:
        message = (
            "no AZURITE_CONNECTION_STRING: run the suite with scripts/test (it starts Azurite)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return connection


@pytest.fixture(scope="session")
def azurite() -> str:
    return azurite_connection()
