"""Drills: each fault on the sending side is caught, by name, by the check meant for it."""

from __future__ import annotations

import contextlib
import io

import pytest

from shared.health import CheckResult
from tools import drill

PRIMARY = {name: fault.catches for name, fault in drill.FAULTS.items()}


def test_every_fault_the_issue_names_has_a_drill_and_its_own_check() -> None:
    assert set(drill.FAULTS) == {
        "step-disabled",
        "key-removed",
        "endpoint-unreachable",
        "flow-off",
        "connection-broken",
        "consumer-stopped",
        "credential-expiring",
    }
    assert len(set(PRIMARY.values())) == len(PRIMARY)  # no two faults share a catching check


def test_list_prints_every_fault() -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert drill.main(["--list"]) == 0
    assert all(name in output.getvalue() for name in drill.FAULTS)


async def test_a_healthy_environment_passes_every_check_and_the_canary_arrives() -> None:
    before, after = await drill.run_drill(None)
    for results in (before, after):
        assert [r.line() for r in results if not r.ok] == []
    canary = {r.target: r.detail for r in after if r.check == "canary"}
    assert sorted(canary) == [
        "contoso-events: canary (Update of account)",
        "flow: Publish account changes to Service Bus",
    ]  # one path per service endpoint step and per publishing flow
    assert all(detail.startswith("delivered in ") for detail in canary.values())


@pytest.mark.parametrize("fault", sorted(drill.FAULTS))
async def test_each_fault_is_caught_by_its_check_and_reported_as_no_other(fault: str) -> None:
    _, after = await drill.run_drill(fault)
    failed = {result.check for result in after if not result.ok}
    assert PRIMARY[fault] in failed
    others = {PRIMARY[name] for name in PRIMARY if name != fault}
    assert failed & others <= drill.FAULTS[fault].effects
    ok, summary = drill.verdict(fault, after)
    assert ok, summary


def test_the_cli_exits_0_when_the_right_check_caught_it() -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert drill.main(["consumer-stopped"]) == 0
    assert "PASS: caught by queue-age" in output.getvalue()


def test_the_verdict_fails_when_another_check_catches_it() -> None:
    wrong = [CheckResult("step-enabled", "x", False, "disabled")]
    ok, summary = drill.verdict("flow-off", wrong)
    assert not ok
    assert "flow-on did not catch it" in summary
    extra = [CheckResult("flow-on", "f", False, "off"), CheckResult("queue-age", "q", False, "")]
    ok, summary = drill.verdict("flow-off", extra)
    assert not ok
    assert "queue-age" in summary


@pytest.mark.parametrize("fault", ["flow-off", "connection-broken"])
async def test_a_broken_flow_silences_its_own_canary_path_only(fault: str) -> None:
    _, after = await drill.run_drill(fault)
    canary = {r.target: r for r in after if r.check == "canary"}
    assert canary["contoso-events: canary (Update of account)"].ok
    flow = canary["flow: Publish account changes to Service Bus"]
    assert not flow.ok
    assert "silent" in flow.detail
    assert drill.FAULTS[fault].catches in flow.detail  # the likely cause, named
