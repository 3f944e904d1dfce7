"""Decode the team's public RemoteExecutionContext captures, when the toolbox is beside the repo.

The captures are public data kept outside this repository (../shared/dataverse-samples); a
user's clone has no such folder and these tests skip. Set DATAVERSE_SAMPLES to point elsewhere.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from shared.context import Entity, EntityReference, RemoteExecutionContext, parse_context

SAMPLES = Path(
    os.environ.get(
        "DATAVERSE_SAMPLES", Path(__file__).resolve().parents[3] / "shared" / "dataverse-samples"
    )
)
FILES = sorted(SAMPLES.glob("*.json")) if SAMPLES.is_dir() else []

pytestmark = pytest.mark.skipif(not FILES, reason=f"no Dataverse samples at {SAMPLES}")


def raw_date(text: str) -> datetime:
    match = re.fullmatch(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/", text)
    if match:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match.group(1)))
    return datetime.fromisoformat(text).astimezone(UTC)


def check_against_raw(context: RemoteExecutionContext, raw: dict[str, Any]) -> None:
    """Header values equal what the file says, read independently with the json module."""
    assert context.message_name == raw["MessageName"]
    assert context.primary_entity_name == raw["PrimaryEntityName"]
    assert context.primary_entity_id == UUID(raw["PrimaryEntityId"])
    assert context.organization_id == UUID(raw["OrganizationId"])
    assert context.operation_id == UUID(raw["OperationId"])
    assert context.stage == raw["Stage"]
    assert context.depth == raw["Depth"]
    assert context.operation_created_on == raw_date(raw["OperationCreatedOn"])
    step = context.owning_extension
    assert step is not None
    assert step.logical_name == raw["OwningExtension"]["LogicalName"]
    inputs = {item["key"]: item["value"] for item in raw["InputParameters"]}
    target = context.target
    if isinstance(inputs.get("Target"), dict) and "Attributes" in inputs["Target"]:
        assert isinstance(target, Entity)
        raw_attributes = {item["key"]: item["value"] for item in inputs["Target"]["Attributes"]}
        assert set(target.attributes) == set(raw_attributes)
        for key, value in raw_attributes.items():
            if isinstance(value, str) and not value.startswith("/Date("):
                assert str(target[key]) == value
    images = {item["key"] for item in raw["PreEntityImages"]}
    assert set(context.pre_entity_images) == images
    if raw["ParentContext"] is not None:
        assert context.parent_context is not None
        check_against_raw(context.parent_context, raw["ParentContext"])


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_sample_decodes_completely_and_matches_its_raw_values(path: Path) -> None:
    body = path.read_bytes()
    context = parse_context(body).validate()
    check_against_raw(context, json.loads(body.decode("utf-8-sig")))


def sample(prefix: str) -> Path:
    found = [path for path in FILES if path.name.startswith(prefix)]
    if not found:
        pytest.skip(f"sample {prefix}* not present")
    return found[0]


def test_contact_update_spot_values() -> None:
    context = parse_context(sample("01-").read_bytes())
    target = context.target
    assert isinstance(target, Entity)
    assert target["firstname"] == "James"
    assert target["modifiedon"] == datetime(2017, 9, 26, 0, 4, 7, tzinfo=UTC)
    assert isinstance(target["modifiedby"], EntityReference)
    assert context.operation_created_on == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
