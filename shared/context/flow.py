"""Rows a Power Automate cloud flow publishes, read as the `RemoteExecutionContext` a service
endpoint would have posted for the same change.

The message contract (README, "Low-code publishers"): a flow triggered by the Dataverse
connector's "When a row is added, modified or deleted", whose Service Bus "Send message" action
sends the trigger's body unchanged. That body is
- the row in Web API form: columns by logical name, lookups as `_<column>_value` with a
  `@Microsoft.Dynamics.CRM.lookuplogicalname` annotation (Learn, "Lookup property data");
- the connector's additions: `_<column>_label` beside a choice, `_<column>_type` beside a
  lookup, and `ItemInternalId` (the row's id), `SdkMessage` (Learn, "Trigger flows when a row is
  added, modified, or deleted": `triggerOutputs()['body/SdkMessage']` is Create, Update or
  Delete), `RunAsSystemUserId` and `RowVersion`, the fields of the trigger's callback;
- for a Delete, the row's id only.
It is recognised by the body alone (`SdkMessage` and `ItemInternalId`, no `MessageName`). The
message properties `DataverseTable` (the table's logical name, needed for a Delete),
`DataverseFlowRunId` (`workflow()['run']['name']`) and `DataverseOrganization` (the
environment's host name, which the origin rule checks against ALLOWED_ORGANIZATIONS, as no
Dataverse claim comes with a flow's message) complete it; the shipped flow sets all three.

What such a message cannot carry, and so the context it becomes does not have: pre and post
images, the initiating user's and the caller's Entra object ids (the loop guard cannot
recognise the app's own writes: filter them in the flow's trigger), the `tag` shared variable,
the step (`OwningExtension`), the organization's id, `Depth` and the execution stage (it reads as
an asynchronous post-operation step). Its OperationId is made from the flow run id, or else from
the row's id, message and RowVersion, so redeliveries of one change share one idempotency key.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from shared.errors import InvalidMessage

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
FLOW_MESSAGES = frozenset({"Create", "Update", "Delete"})
TABLE_PROPERTY = "dataversetable"  # lower case: properties are looked up in any case
RUN_PROPERTY = "dataverseflowrunid"
ORGANIZATION_PROPERTY = "dataverseorganization"
FLOW_NAME_PROPERTY = "dataverseflow"  # the flow's display name: its canary path
PUBLISHER = "PowerAutomate"  # the context's `Publisher` member: how the dispatcher tells
_LOOKUP = "@Microsoft.Dynamics.CRM.lookuplogicalname"
_EXTRAS = frozenset({"ItemInternalId", "SdkMessage", "RunAsSystemUserId", "RowVersion"})
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
# OperationIds of flow events: uuid5 in this namespace, from the run or the change.
FLOW_NAMESPACE = uuid.UUID("5f0c9a4e-6a53-4f8e-9a0e-2f5f3b1d7c11")


def is_flow_row(tree: Any) -> bool:
    """Whether a decoded JSON body is a flow's trigger row rather than a context."""
    return (
        isinstance(tree, dict)
        and "MessageName" not in tree
        and tree.get("SdkMessage") in FLOW_MESSAGES
        and isinstance(tree.get("ItemInternalId"), str)
    )


def _guid(raw: Any, what: str) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise InvalidMessage("InvalidValue", f"the flow row's {what} is not a GUID") from None


def _table(row: Mapping[str, Any], row_id: str, declared: str | None) -> str:
    """The table: the `DataverseTable` property, else the column holding the row's own id
    (`<table>id` for every standard and custom table)."""
    if declared:
        if not _NAME.match(declared):
            raise InvalidMessage("InvalidValue", "the DataverseTable property is not a table name")
        return declared
    for key, value in row.items():
        own_id = isinstance(value, str) and value.lower() == row_id
        if own_id and key.endswith("id") and not key.startswith("_") and _NAME.match(key[:-2]):
            return key[:-2]
    raise InvalidMessage(
        "NotAnExecutionContext",
        "a flow's row without its table: a Delete carries only the row id, so the flow's Send "
        "message action must set the DataverseTable property (README, 'Low-code publishers')",
    )


def _attributes(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for key, value in row.items():
        if "@" in key or key in _EXTRAS:
            continue
        if key.startswith("_") and key.endswith("_value"):
            column = key[1:-6]
            target = row.get(key + _LOOKUP) or row.get(f"_{column}_type")
            if value is None:
                found.append({"key": column, "value": None})
            elif isinstance(target, str):
                reference = {
                    "__type": f"EntityReference:{CONTRACTS}",
                    "Id": _guid(value, column),
                    "LogicalName": target,
                    "Name": row.get(key + "@OData.Community.Display.V1.FormattedValue"),
                }
                found.append({"key": column, "value": reference})
            continue
        if key.startswith("_") and key.endswith(("_label", "_type")):
            base = key[1:].rsplit("_", 1)[0]
            if base in row or f"_{base}_value" in row:
                continue  # the connector's companion of a choice or a lookup
        found.append({"key": key, "value": _typed(key, value, row)})
    return found


def _typed(column: str, value: Any, row: Mapping[str, Any]) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and f"_{column}_label" in row:
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
    if isinstance(value, int | float) and (
        f"{column}_base" in row or (column.endswith("_base") and column[:-5] in row)
    ):
        return {"__type": f"Money:{CONTRACTS}", "Value": value}
    if isinstance(value, str) and _ISO.match(value):
        from datetime import datetime

        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return f"/Date({int(moment.timestamp() * 1000)})/"
    return value


def context_tree(row: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """The context a service endpoint would have posted for this change, as the JSON reader's
    tree. `properties`: the message's application properties, keys in lower case."""
    message = str(row["SdkMessage"])
    row_id = _guid(row["ItemInternalId"], "ItemInternalId")
    declared = properties.get(TABLE_PROPERTY)
    table = _table(row, row_id, None if declared is None else str(declared))
    run = properties.get(RUN_PROPERTY)
    change = f"run:{run}" if run else f"row:{row_id}:{message}:{row.get('RowVersion')}"
    user = row.get("RunAsSystemUserId")
    if message == "Delete":
        target: dict[str, Any] = {
            "__type": f"EntityReference:{CONTRACTS}",
            "Id": row_id,
            "LogicalName": table,
            "Name": None,
        }
    else:
        target = {
            "__type": f"Entity:{CONTRACTS}",
            "Attributes": _attributes(row),
            "Id": row_id,
            "LogicalName": table,
            "RowVersion": None if row.get("RowVersion") is None else str(row["RowVersion"]),
        }
    modified = row.get("modifiedon")
    organization = str(properties.get(ORGANIZATION_PROPERTY) or "").strip().lower()
    return {
        "Publisher": PUBLISHER,
        "FlowName": str(properties.get(FLOW_NAME_PROPERTY) or ""),
        "OrganizationId": "00000000-0000-0000-0000-000000000000",
        "OrganizationName": organization,
        "MessageName": message,
        "PrimaryEntityName": table,
        "PrimaryEntityId": row_id,
        "Stage": 40,
        "Mode": 1,
        "Depth": 1,
        "OperationId": str(uuid.uuid5(FLOW_NAMESPACE, change)),
        "OperationCreatedOn": _typed("modifiedon", modified, row) if modified else None,
        "UserId": None if user is None else _guid(user, "RunAsSystemUserId"),
        "InputParameters": [{"key": "Target", "value": target}],
        "OutputParameters": [{"key": "id", "value": row_id}] if message == "Create" else [],
        "PreEntityImages": [],
        "PostEntityImages": [],
        "SharedVariables": [],
    }
