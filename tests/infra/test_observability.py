"""Alerts, the action group and the workbook are in the template, and their KQL reads tables
and columns that exist in the Application Insights schema the app writes to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.test_structure import BICEP, resource

ROOT = Path(__file__).resolve().parents[2]
QUERIES = sorted((ROOT / "infra" / "queries").glob("*.kql"))

# Workspace-based Application Insights tables the app's telemetry lands in (Learn: "Azure
# Monitor Logs reference"): consumer spans -> AppRequests, client spans -> AppDependencies,
# log records -> AppTraces, metrics -> AppMetrics. The columns these queries may use.
SCHEMA = {
    "AppRequests": {"TimeGenerated", "Name", "Success", "ResultCode", "DurationMs", "Properties",
                    "OperationId", "Id", "AppRoleName"},
    "AppDependencies": {"TimeGenerated", "Name", "Target", "Success", "ResultCode", "DurationMs",
                        "Properties", "OperationId", "DependencyType"},
    "AppTraces": {"TimeGenerated", "Message", "SeverityLevel", "Properties", "OperationId"},
    "AppMetrics": {"TimeGenerated", "Name", "Sum", "Count", "Min", "Max", "Properties"},
}  # fmt: skip
KQL_WORDS = {
    "where", "extend", "summarize", "by", "bin", "count", "countif", "percentile", "todouble",
    "tostring", "ago", "isnotempty", "isnotnull", "render", "timechart", "barchart", "or", "and",
    "project", "order", "desc", "asc", "sum", "avg", "max", "min", "h", "m", "d",
}  # fmt: skip


def test_an_action_group_takes_the_operators_addresses() -> None:
    group = resource("operators")
    assert "Microsoft.Insights/actionGroups" in group
    assert "for (address, i) in alertEmails" in group
    assert "param alertEmails array = []" in BICEP


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("deadLetteredAlert", "DeadletteredMessages"),
        ("activeMessagesAlert", "ActiveMessages"),
        ("eventHubIdleConsumerAlert", "OutgoingMessages"),
    ],
)
def test_each_metric_alert_watches_its_metric_and_pages_the_operators(
    name: str, metric: str
) -> None:
    alert = resource(name)
    assert f"metricName: '{metric}'" in alert
    assert "actions: [ alertAction ]" in alert
    assert "description: '" in alert  # what it means, for whoever is paged


def test_log_alerts_cover_health_lag_and_the_dead_letter_rate() -> None:
    block = BICEP[BICEP.index("var logAlerts = [") :].split("\n]\n", 1)[0]
    assert re.findall(r"name: '([\w-]+)'", block) == ["health", "lag-p95", "dead-letter-rate"]
    assert "lagP95ThresholdSeconds" in block
    assert "deadLetterRateThreshold" in block
    rules = resource("logAlertRules")
    assert "scopes: [ logs.id ]" in rules
    assert "actionGroups: [ operators.id ]" in rules


def test_the_workbook_and_the_alerts_load_only_query_files_that_exist() -> None:
    loaded = set(re.findall(r"loadTextContent\('queries/([\w-]+\.kql)'\)", BICEP))
    assert loaded == {path.name for path in QUERIES}
    items = BICEP[BICEP.index("var workbookQueries = [") :].split("\n]\n", 1)[0]
    assert len(re.findall(r"title: '", items)) == 5
    assert "serializedData: string(" in resource("workbook")


def identifiers(query: str) -> set[str]:
    code = "\n".join(line for line in query.splitlines() if not line.lstrip().startswith("//"))
    code = re.sub(r'"[^"]*"', '""', code)  # string literals: attribute names, values
    return set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", code))


@pytest.mark.parametrize("path", QUERIES, ids=lambda path: path.name)
def test_each_query_reads_a_known_table_and_its_columns(path: Path) -> None:
    query = path.read_text()
    first = next(
        line.strip()
        for line in query.splitlines()
        if line.strip() and not line.lstrip().startswith("//")
    )
    assert first in SCHEMA, f"{path.name} starts from {first!r}"
    columns = SCHEMA[first]
    defined = set(re.findall(r"\b([A-Z][A-Za-z0-9]*)\s*=", query))  # extend / summarize names
    unknown = {
        name
        for name in identifiers(query) - KQL_WORDS - {first} - columns - defined
        if not name.isdigit() and not name.islower()
    }
    assert unknown == set(), f"{path.name} uses {sorted(unknown)}, not columns of {first}"


def test_the_check_catches_a_column_the_table_lacks() -> None:
    bad = "AppRequests\n| where Outcome2 == 'x'\n| summarize count() by Message\n"
    names = identifiers(bad) - KQL_WORDS - {"AppRequests"} - SCHEMA["AppRequests"]
    assert {"Outcome2", "Message"} <= names
