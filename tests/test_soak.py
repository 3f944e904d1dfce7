"""A short run of the fault-injection soak (benchmarks/soak.py) as part of the suite."""

from __future__ import annotations

import logging

import pytest

from benchmarks.soak import report, soak


async def test_no_effect_is_lost_doubled_or_stale_under_faults(
    azurite: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the handlers crash on purpose, often
    result = await soak(300, 25, 4, seed=11)
    summary = report(result)
    assert result.lost == 0, summary
    assert result.doubled == 0, summary
    assert result.stale_applied == 0, summary
    assert result.rows_behind == 0, summary
    assert result.dead_letters == 0, summary
    # The faults really happened: duplicates and retries, and handlers dying mid-way.
    assert result.deliveries > result.events * 1.15, summary
    assert result.crashes >= 20, summary
    assert result.handler_runs > result.events + result.crashes, summary
    assert result.effects_applied == result.effects_expected == 300
