from __future__ import annotations

import logging

import orjson
import pytest

from handlers.audit_trail import MAX_COLUMNS_LOGGED, record_audit_line, router
from shared import parse_context
from tests.conftest import context_bytes


async def test_one_line_naming_columns_not_values(caplog: pytest.LogCaptureFixture) -> None:
    context = parse_context(context_bytes("account-create.json"))
    with caplog.at_level(logging.INFO, logger="dataverse.audit"):
        await record_audit_line(context, None)  # it never writes
    (record,) = caplog.records
    line = record.getMessage()
    assert line.startswith("Create of account acc00000-0000-4000-8000-000000000001 by user")
    assert "revenue" in line
    assert "Northwind" not in line
    assert "1234567" not in line


def test_it_matches_every_table_and_message() -> None:
    (route,) = router.routes
    assert (route.entity, route.message, route.stage) == ("*", "*", None)


async def test_a_wide_row_gives_a_short_line(caplog: pytest.LogCaptureFixture) -> None:
    # 20,000 columns made one 950 KB line, which log ingestion truncates or drops.
    tree = orjson.loads(context_bytes("account-create.json"))
    target = tree["InputParameters"][0]["value"]
    target["Attributes"] = [{"key": f"new_column{n:05}", "value": n} for n in range(20_000)]
    context = parse_context(orjson.dumps(tree))
    with caplog.at_level(logging.INFO, logger="dataverse.audit"):
        await record_audit_line(context, None)
    (record,) = caplog.records
    line = record.getMessage()
    assert len(line) < 2000
    assert f"and {20_000 - MAX_COLUMNS_LOGGED} more" in line
