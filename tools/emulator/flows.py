"""Cloud flows the emulator runs: every `workflow` row that is a modern flow (category 5), on
(statecode 1), whose trigger is the Dataverse connector's "When a row is added, modified or
deleted" (shared/flow_definition.py) publishes each matching committed write to the local
broker as the shipped flow would: the trigger's body (the row in Web API form with the
connector's fields, shared/context/flow.py) and the properties its Send message action sets.

A flow whose connection references are not all connected fails its run and sends nothing, as
in Power Automate; a flow turned off sends nothing. Turning a flow on registers its trigger as a
`callbackregistration` row (what Dataverse runs flow triggers from; its `name` is the flow's id
here, an assumption), turning it off removes it, and a flow whose registration is gone is not
triggered: the health run's `flow-trigger` check looks for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from shared.flow_definition import (
    ACTIVATED,
    MESSAGE_CODES,
    MODERN_FLOW,
    connection_references,
    trigger_of,
    variables,
)
from tools.emulator.contexts import LOOKUP, is_choice
from tools.emulator.posting import PostedMessage, Write

if TYPE_CHECKING:
    from tools.emulator.app import DataverseEmulator


def flow_row(write: Write) -> dict[str, Any]:
    """The trigger's body for a committed write."""
    extras = {
        "ItemInternalId": write.row_id,
        "SdkMessage": write.message,
        "RunAsSystemUserId": str(write.identity.system_user_id),
        "RowVersion": None if write.after_version is None else str(write.after_version),
    }
    if write.message == "Delete":
        return extras  # "only the row ID is available" (Learn, Dataverse triggers)
    body: dict[str, Any] = {}
    for key, value in (write.after or {}).items():
        body[key] = value
        if key.startswith("_") and key.endswith("_value") and not key.endswith(LOOKUP):
            target = (write.after or {}).get(key + LOOKUP)
            if target:
                body[f"{key[:-6]}_type"] = target
        elif is_choice(key, value):
            body[f"_{key}_label"] = f"Choice {value}"
    body.setdefault(write.table.primary_id, write.row_id)
    return body | extras


class FlowRunner:
    def __init__(self, emulator: DataverseEmulator) -> None:
        self.emulator = emulator
        self.runs: list[dict[str, Any]] = []  # every run: flow, status, reason

    def _rows(self, entity_set: str) -> list[dict[str, Any]]:
        return [data for data, _ in self.emulator.store.all(entity_set)]

    def after_write(self, write: Write) -> None:
        if write.table.logical_name == "workflow":
            self._sync_callback(write)
            return
        callbacks = {row.get("name") for row in self._rows("callbackregistrations")}
        for flow in self._rows("workflows"):
            if str(flow.get("workflowid")) not in callbacks:
                continue
            if flow.get("category") != MODERN_FLOW or flow.get("statecode") != ACTIVATED:
                continue
            raw = flow.get("clientdata")
            trigger = trigger_of(raw) if isinstance(raw, str) else None
            if trigger is None:
                continue
            table, messages = trigger
            if table == write.table.logical_name and write.message in messages:
                self._run(flow, str(raw), write)

    def _sync_callback(self, write: Write) -> None:
        flow = write.after or {}
        row_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "callbackregistration:" + write.row_id))
        raw = flow.get("clientdata")
        trigger = trigger_of(raw) if isinstance(raw, str) else None
        on = flow.get("category") == MODERN_FLOW and flow.get("statecode") == ACTIVATED
        if not on or trigger is None:
            self.emulator.store.delete("callbackregistrations", row_id)
            return
        table, messages = trigger
        self.emulator.store.put(
            "callbackregistrations",
            row_id,
            {"callbackregistrationid": row_id, "name": write.row_id, "entityname": table,
             "message": MESSAGE_CODES[messages], "scope": 4, "version": 1,
             "url": f"https://flow.local/workflows/{write.row_id}/triggers/manual"},
        )  # fmt: skip

    def _variable(self, schema: str, default: str) -> str:
        for row in self._rows("environmentvariabledefinitions"):
            if row.get("schemaname") == schema:
                return str(row.get("value") or row.get("defaultvalue") or default)
        return default

    def _run(self, flow: Mapping[str, Any], raw: str, write: Write) -> None:
        connected = {
            row.get("connectionreferencelogicalname")
            for row in self._rows("connectionreferences")
            if row.get("connectionid") and row.get("statecode", 0) == 0
        }
        missing = [name for name in connection_references(raw) if name not in connected]
        run = {"flow": flow.get("name"), "row": write.row_id, "message": write.message}
        if missing:
            self.runs.append(run | {"status": "Failed", "reason": f"not connected: {missing}"})
            return
        values = {name: self._variable(*spec) for name, spec in variables(raw).items()}
        queue = next(value for name, value in values.items() if "queue" in name.lower())
        host = next(value for name, value in values.items() if "organization" in name.lower())
        run_id = uuid.uuid4().hex
        self.runs.append(run | {"status": "Succeeded", "run": run_id})
        poster = self.emulator.poster
        poster._sequence += 1
        poster.broker.send(
            PostedMessage(
                endpoint=str(flow.get("name", "")),
                contract=0,
                path=queue,
                body=orjson.dumps(flow_row(write)),
                content_type="application/json",
                application_properties={
                    "DataverseTable": write.table.logical_name,
                    "DataverseFlow": str(flow.get("name", "")),
                    "DataverseFlowRunId": run_id,
                    "DataverseOrganization": host,
                },
                message_id=str(uuid.uuid4()),
                sequence_number=poster._sequence,
                enqueued_time_utc=self.emulator.clock(),
            )
        )
