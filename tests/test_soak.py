"""A short run of the fault-injection soak (benchmarks/soak.py) as part of the suite: every
fault of FAULTS on, in scaled time (a 300 s lease lasts 3 s)."""

from __future__ import annotations

import logging

import pytest

from benchmarks.soak import FAULTS, parse_faults, report, soak


async def test_no_effect_is_lost_doubled_stale_or_dead_lettered_early_under_faults(
    azurite: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the handlers crash on purpose, often
    result = await soak(400, 25, 4, seed=11, faults=parse_faults("all"), storage=azurite)
    summary = report(result)
    assert result.lost == 0, summary
    assert result.doubled == 0, summary
    assert result.stale_applied == 0, summary
    assert result.rows_behind == 0, summary
    assert result.premature_dead_letters == 0, summary
    assert sum(result.dead_letters.values()) == 0, summary
    assert result.effects_applied == result.effects_expected == 400
    # The faults really happened: duplicates and retries, handlers dying mid-way, instances
    # crashing with claims held, slow handlers, refused completions, a flaky poison store.
    assert result.deliveries > result.events * 1.15, summary
    assert result.crashes >= 10, summary
    assert result.instance_crashes >= 1, summary
    assert result.slow_runs >= 1, summary
    assert result.complete_errors >= 10, summary
    assert result.eventhub is not None
    assert result.eventhub.lost == 0, summary
    assert result.eventhub.premature_parked == 0, summary
    assert result.eventhub.park_failures >= 1, summary
    assert sum(result.eventhub.parked.values()) == result.eventhub.poison, summary
    assert summary.splitlines()[-1].startswith("events=400 lost=0 doubled=0 stale_applied=0")


def test_faults_are_named() -> None:
    assert parse_faults("all") == frozenset(FAULTS)
    assert parse_faults("none") == frozenset()
    assert parse_faults("crashes, clock-skew") == {"crashes", "clock-skew"}
    with pytest.raises(ValueError, match="unknown faults"):
        parse_faults("crashes,typo")
