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
