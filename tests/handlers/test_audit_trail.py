from __future__ import annotations

import logging

import pytest

from handlers.audit_trail import record_audit_line, router
from shared import parse_context
from tests.conftest import context_bytes


async def test_one_line_naming_columns_not_values(caplog: pytest.LogCaptureFixture) -> None:
    context = parse_context(context_bytes("account-create.json"))
    with caplog.at_level(logging.INFO, logger="dataverse.audit"):
        await record_audit_line(context, None)  # it never writes
    (record,) = caplog.records
    line = record.getMessage()
    assert line.startswith("Create of account acc00000-0000-4000-8000-000000000001 by user")
    assert "'revenue'" in line
    assert "Northwind" not in line
    assert "1234567" not in line


def test_it_matches_every_table_and_message() -> None:
    (route,) = router.routes
    assert (route.entity, route.message, route.stage) == ("*", "*", None)
