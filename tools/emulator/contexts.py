"""The `RemoteExecutionContext` the emulator posts for a write, in the JSON Dataverse posts
(DataContractJsonSerializer's form: `__type` hints, key/value lists, `/Date(ms)/` dates), the
same shape as the fixtures the Microsoft serializers wrote (tests/fixtures/contexts).

The emulator stores rows as Web API JSON, without column types, so types are recovered as the
Web API shows them: `_<lookup>_value` with its lookuplogicalname annotation becomes an
EntityReference, ISO-8601 date-times become dates, integers of `statecode`, `statuscode` and
columns ending in `code` become OptionSetValues; other values stay as they are.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$")
LOOKUP = "@Microsoft.Dynamics.CRM.lookuplogicalname"


@dataclass(frozen=True)
class Identity:
    """Who a request runs as: the systemuser row and its Entra object id."""

    system_user_id: uuid.UUID
    object_id: uuid.UUID
    name: str


@dataclass(frozen=True)
class StepFacts:
    """What the context says about the step that posts it."""

    step_id: str
    step_name: str
    stage: int
    mode: int


def json_date(moment: datetime) -> str:
    return f"/Date({int(moment.timestamp() * 1000)})/"


def reference(logical_name: str, row_id: str, name: str | None = None) -> dict[str, Any]:
    return {
        "__type": f"EntityReference:{CONTRACTS}",
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "Name": name,
        "RowVersion": None,
    }


def typed(column: str, value: Any) -> Any:
    if isinstance(value, str) and _ISO.match(value):
        return json_date(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if is_choice(column, value):
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
    return value


def is_choice(column: str, value: Any) -> bool:
    """The emulator's choice columns: tables.toml does not type columns, so a whole number in
    statecode, statuscode or a column named *code is taken for one."""
    named = column in ("statecode", "statuscode") or column.endswith("code")
    return named and isinstance(value, int) and not isinstance(value, bool)


def attributes(row: Mapping[str, Any], columns: Iterable[str] | None) -> list[dict[str, Any]]:
    """A row's columns as an Entity's Attributes; `columns` None: all of them."""
    wanted = None if columns is None else set(columns)
    found = []
    for key, value in row.items():
        if "@" in key:
            continue
        if key.startswith("_") and key.endswith("_value"):
            column = key[1:-6]
            logical = row.get(key + LOOKUP)
            item: Any = None if value is None else reference(str(logical), str(value))
        else:
            column, item = key, typed(key, value)
        if wanted is None or column in wanted:
            found.append({"key": column, "value": item})
    return found


def entity(
    logical_name: str,
    row_id: str,
    row: Mapping[str, Any],
    columns: Iterable[str] | None,
    *,
    type_hint: bool,
    row_version: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if type_hint:
        body["__type"] = f"Entity:{CONTRACTS}"
    body.update(
        {
            "Attributes": attributes(row, columns),
            "EntityState": None,
            "FormattedValues": [],
            "Id": row_id,
            "KeyAttributes": [],
            "LogicalName": logical_name,
            "RelatedEntities": [],
            "RowVersion": None if row_version is None else str(row_version),
        }
    )
    return body


def build_context(
    *,
    message: str,
    logical_name: str,
    row_id: str,
    target: dict[str, Any],
    input_extra: list[dict[str, Any]],
    output: list[dict[str, Any]],
    pre_images: list[dict[str, Any]],
    post_images: list[dict[str, Any]],
    step: StepFacts,
    identity: Identity,
    organization_id: uuid.UUID,
    organization_name: str,
    business_unit_id: uuid.UUID,
    operation_id: uuid.UUID,
    created_on: datetime | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """One context, keys in the order DataContractJsonSerializer writes them (alphabetical)."""
    user = str(identity.system_user_id)
    return {
        "BusinessUnitId": str(business_unit_id),
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": str(identity.object_id),
        "InitiatingUserId": user,
        "InputParameters": [{"key": "Target", "value": target}, *input_extra],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 2,
        "MessageName": message,
        "Mode": step.mode,
        "OperationCreatedOn": json_date(created_on or datetime.now(UTC)),
        "OperationId": str(operation_id),
        "OrganizationId": str(organization_id),
        "OrganizationName": organization_name,
        "OutputParameters": output,
        "OwningExtension": {
            "Id": step.step_id,
            "KeyAttributes": [],
            "LogicalName": "sdkmessageprocessingstep",
            "Name": step.step_name,
            "RowVersion": None,
        },
        "ParentContext": None,
        "PostEntityImages": post_images,
        "PreEntityImages": pre_images,
        "PrimaryEntityId": row_id,
        "PrimaryEntityName": logical_name,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [] if not tag else [{"key": "tag", "value": tag}],
        "Stage": step.stage,
        "UserAzureActiveDirectoryObjectId": str(identity.object_id),
        "UserId": user,
    }


def truncated(context: dict[str, Any]) -> dict[str, Any]:
    """What Dataverse posts when the context exceeds the message size limit: no
    InputParameters, images or ParentContext (the message carries MessageMaxSizeExceeded)."""
    return {
        **context,
        "InputParameters": [],
        "PostEntityImages": [],
        "PreEntityImages": [],
        "ParentContext": None,
    }
