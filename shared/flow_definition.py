"""The cloud flow that publishes a table's rows to the app's queue, built from
infra/flows/publish-rows.json for one entry of an environment file's `[[flows]]`.

The definition is a `workflow` row's `clientdata` (Learn, "Work with cloud flows using code":
a modern flow is a `workflow` row with category 5 whose clientdata holds its connection
references and its Logic Apps definition). Its trigger is the Dataverse connector's "When a row
is added, modified or deleted"; its one action sends the trigger's body to Service Bus with the
properties the app reads (shared/context/flow.py). The queue and the organization's host are
environment variables, and both connectors go through connection references, so the same
definition moves between environments in a solution.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The `workflow` and `environmentvariabledefinition` values a publishing flow is made of.
MODERN_FLOW = 5  # workflow.category: a cloud flow
DRAFT, ACTIVATED = 0, 1  # workflow.statecode: off, on
STRING_VARIABLE = 100000000  # environmentvariabledefinition.type: String
TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "flows" / "publish-rows.json"
TRIGGER_OPERATION = "SubscribeWebhookTrigger"
# subscriptionRequest/message: which changes run the trigger (the connector's Change type).
MESSAGE_CODES: dict[frozenset[str], int] = {
    frozenset({"Create"}): 1,
    frozenset({"Delete"}): 2,
    frozenset({"Update"}): 3,
    frozenset({"Create", "Update"}): 4,
    frozenset({"Create", "Delete"}): 5,
    frozenset({"Update", "Delete"}): 6,
    frozenset({"Create", "Update", "Delete"}): 7,
}
MESSAGES_OF = {code: messages for messages, code in MESSAGE_CODES.items()}


def clientdata(
    *,
    table: str,
    messages: Iterable[str],
    queue: str,
    organization: str,
    dataverse_connection: str,
    servicebus_connection: str,
    prefix: str,
) -> str:
    """The flow's `clientdata` as the text a `workflow` row holds."""
    code = MESSAGE_CODES.get(frozenset(messages))
    if code is None:
        raise ValueError(f"a flow publishes Create, Update or Delete, not {sorted(messages)}")
    text = TEMPLATE.read_text(encoding="utf-8")
    names = {
        "__DATAVERSE_CONNECTION_REFERENCE__": dataverse_connection,
        "__SERVICEBUS_CONNECTION_REFERENCE__": servicebus_connection,
        "__QUEUE_VARIABLE_SCHEMA__": f"{prefix}_DataverseEventsQueue",
        "__QUEUE_VARIABLE__": f"Dataverse events queue ({prefix}_DataverseEventsQueue)",
        "__ORGANIZATION_VARIABLE_SCHEMA__": f"{prefix}_DataverseOrganization",
        "__ORGANIZATION_VARIABLE__": f"Dataverse organization ({prefix}_DataverseOrganization)",
        "__QUEUE__": queue,
        "__ORGANIZATION__": organization,
        "__TABLE__": table,
    }
    for placeholder, value in names.items():
        text = text.replace(placeholder, value)
    document = json.loads(text)
    trigger = _trigger(document)
    trigger["inputs"]["parameters"]["subscriptionRequest/message"] = code
    return json.dumps(document, separators=(",", ":"))


def _trigger(document: Mapping[str, Any]) -> dict[str, Any]:
    triggers = document["properties"]["definition"]["triggers"]
    return dict(next(iter(triggers.values())))


def trigger_of(raw: str) -> tuple[str, frozenset[str]] | None:
    """The table and messages of a flow's row trigger, or None for any other flow."""
    try:
        document = json.loads(raw)
        trigger = _trigger(document)
        if trigger["inputs"]["host"]["operationId"] != TRIGGER_OPERATION:
            return None
        parameters = trigger["inputs"]["parameters"]
        return str(parameters["subscriptionRequest/entityname"]), MESSAGES_OF[
            int(parameters["subscriptionRequest/message"])
        ]
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def variables(raw: str) -> dict[str, tuple[str, str]]:
    """The definition's environment-variable parameters: name -> (schema name, default)."""
    document = json.loads(raw)
    found = {}
    for name, parameter in document["properties"]["definition"]["parameters"].items():
        schema = parameter.get("metadata", {}).get("schemaName")
        if schema:
            found[name] = (str(schema), str(parameter.get("defaultValue", "")))
    return found


def connection_references(raw: str) -> list[str]:
    document = json.loads(raw)
    return [
        str(reference["connection"]["connectionReferenceLogicalName"])
        for reference in document["properties"]["connectionReferences"].values()
    ]
