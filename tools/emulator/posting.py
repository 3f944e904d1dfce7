"""The emulator posts events, as Dataverse does for the steps registered on a service endpoint.

`tools.endpoints apply` writes service endpoints, steps and images through the Web API; the
emulator stores them like any rows. After each write that commits (Create, Update, Delete, an
upsert), every enabled step on that message and table posts one context to its endpoint:

- an Update posts only when a changed column is among the step's filtering attributes (all
  changes when it has none); `MSCRM.BypassBusinessLogicExecution: CustomAsync` (or the step's id
  in `...StepIds`) skips asynchronous steps, as Dataverse does;
- the Target holds the columns written; pre and post images hold the image's columns of the row
  before and after (all columns when the image lists none), the post image with its RowVersion;
- the user and initiating user are the caller's identity (`DataverseEmulator.identities`, by
  bearer token), the SharedVariables carry the request's `tag`;
- the message gets the claims Dataverse sets as properties (Organization host, User and
  InitiatingUser when the endpoint's userclaim asks, EntityLogicalName, RequestName,
  InitiatingUserAgent), and MessageMaxSizeExceeded when the context was over 192 KB and was
  cut down to its header;
- every post is a system job (`asyncoperations`, operation type 1, owned by the step):
  Succeeded; Failed with Dataverse's error text when the endpoint has no key; left Waiting
  (Suspended, to be retried) after a network error, when the endpoint cannot be reached
  (`unreachable_endpoints`), as Learn describes. Then no message is delivered.

Messages land in a `LocalBroker`, one queue per entity path, which the demo and tests drain
through the app's own Service Bus handling, in the endpoint's message format: JSON (2), XML (3)
or .NET binary (1), written by tools/emulator/formats.py and checked against Microsoft's
serializers (tests/fixtures/emulator, tools/fixturegen).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from tools.emulator.contexts import (
    Identity,
    StepFacts,
    build_context,
    entity,
    reference,
    truncated,
)
from tools.emulator.formats import to_binary, to_xml

if TYPE_CHECKING:
    from tools.emulator.app import DataverseEmulator
    from tools.emulator.store import Table

CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"
MAX_MESSAGE_BYTES = 192 * 1024  # Learn: larger contexts are posted without their parameters
SUCCEEDED, FAILED, WAITING = 30, 31, 10  # asyncoperation.statuscode
COMPLETED, SUSPENDED = 3, 1  # asyncoperation.statecode
BINARY_FORMAT, JSON_FORMAT, XML_FORMAT = 1, 2, 3  # serviceendpoint.messageformat
IMAGE_PRE, IMAGE_POST, IMAGE_BOTH = 0, 1, 2
ASYNC_MODE = 1
NO_KEY = (
    "The service endpoint has no SAS key: Dataverse could not authorize the post. Set the key "
    "on the service endpoint (tools.endpoints apply re-applies it)."
)
UNREACHABLE = (
    "A network error occurred while posting to the service endpoint {name} "
    "({address}): the remote name could not be resolved or the connection was refused."
)


@dataclass
class PostedMessage:
    """A message as the broker holds it, with the attributes of the Service Bus SDK's
    `ServiceBusReceivedMessage` that the app reads (`DataverseEvent.from_service_bus`)."""

    endpoint: str
    contract: int
    path: str
    body: bytes
    content_type: str
    application_properties: Mapping[str, str]
    message_id: str
    sequence_number: int
    enqueued_time_utc: datetime
    delivery_count: int = 1


@dataclass
class LocalBroker:
    """The queues, topics and event hubs the emulator posts to, in memory."""

    queues: dict[str, deque[PostedMessage]] = field(default_factory=dict)
    sent: list[PostedMessage] = field(default_factory=list)

    def send(self, message: PostedMessage) -> None:
        self.queues.setdefault(message.path, deque()).append(message)
        self.sent.append(message)

    def receive(self, path: str) -> PostedMessage | None:
        queue = self.queues.get(path)
        return queue.popleft() if queue else None

    def pending(self, path: str) -> int:
        return len(self.queues.get(path, ()))


@dataclass(frozen=True)
class Write:
    """One committed write, as the posting pipeline sees it."""

    message: str  # Create, Update, Delete
    table: Table
    row_id: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    after_version: int | None
    changed: frozenset[str]
    identity: Identity
    tag: str | None
    headers: Mapping[str, str]


def encoded(context: dict[str, Any], message_format: int) -> tuple[bytes, str]:
    """The body and content type of a context in serviceendpoint.messageformat's format."""
    if message_format == XML_FORMAT:
        return to_xml(context), "application/xml"
    if message_format == BINARY_FORMAT:
        return to_binary(to_xml(context)), "application/msbin1"
    return orjson.dumps(context), "application/json"


class Poster:
    def __init__(self, emulator: DataverseEmulator) -> None:
        self.emulator = emulator
        self.broker = LocalBroker()
        self._sequence = 0

    def _rows(self, entity_set: str) -> list[dict[str, Any]]:
        return self.emulator.rows(entity_set)

    def steps_for(self, message: str, logical_name: str) -> list[dict[str, Any]]:
        """Enabled steps registered on this message and table, in rank order."""
        messages = {
            row["sdkmessageid"]: row["name"]
            for row in self._rows("sdkmessages")
            if str(row.get("name", "")).lower() == message.lower()
        }
        if not messages:
            return []
        filters = {
            row["sdkmessagefilterid"]
            for row in self._rows("sdkmessagefilters")
            if row.get("_sdkmessageid_value") in messages
            and row.get("primaryobjecttypecode") == logical_name
        }
        found = [
            step
            for step in self._rows("sdkmessageprocessingsteps")
            if step.get("_sdkmessageid_value") in messages
            and step.get("_sdkmessagefilterid_value") in filters
            and step.get("statecode", 0) == 0
            and step.get("_eventhandler_value")
        ]
        return sorted(found, key=lambda step: step.get("rank", 1))

    def after_write(self, write: Write) -> None:
        for step in self.steps_for(write.message, write.table.logical_name):
            if self._filtered_out(step, write) or self._bypassed(step, write.headers):
                continue
            self._post(step, write)

    @staticmethod
    def _filtered_out(step: Mapping[str, Any], write: Write) -> bool:
        if write.message != "Update" or not step.get("filteringattributes"):
            return False
        filtering = {c.strip() for c in str(step["filteringattributes"]).split(",")}
        return not filtering & write.changed

    @staticmethod
    def _bypassed(step: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        bypass = headers.get("mscrm.bypassbusinesslogicexecution", "")
        if step.get("mode") == ASYNC_MODE and "customasync" in bypass.lower():
            return True
        ids = headers.get("mscrm.bypassbusinesslogicexecutionstepids", "")
        return str(step["sdkmessageprocessingstepid"]) in {i.strip() for i in ids.split(",")}

    def _images(
        self, step: Mapping[str, Any], write: Write
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        pre, post = [], []
        logical = write.table.logical_name
        for image in self._rows("sdkmessageprocessingstepimages"):
            if image.get("_sdkmessageprocessingstepid_value") != step["sdkmessageprocessingstepid"]:
                continue
            listed = image.get("attributes")
            columns = None if not listed else [c.strip() for c in str(listed).split(",")]
            alias = image.get("entityalias") or image.get("name")
            kind = image.get("imagetype", IMAGE_POST)
            if kind in (IMAGE_PRE, IMAGE_BOTH) and write.before is not None:
                body = entity(logical, write.row_id, write.before, columns, type_hint=False)
                pre.append({"key": alias, "value": body})
            if kind in (IMAGE_POST, IMAGE_BOTH) and write.after is not None:
                body = entity(
                    logical,
                    write.row_id,
                    write.after,
                    columns,
                    type_hint=False,
                    row_version=write.after_version,
                )
                post.append({"key": alias, "value": body})
        return pre, post

    def _context(self, step: Mapping[str, Any], write: Write) -> dict[str, Any]:
        logical = write.table.logical_name
        if write.message == "Delete":
            target = reference(logical, write.row_id)
        else:
            written = {
                key: value
                for key, value in (write.after or {}).items()
                if key in write.changed or key.split("@")[0][1:-6] in write.changed
            }
            written.setdefault(write.table.primary_id, write.row_id)
            target = entity(logical, write.row_id, written, None, type_hint=True)
        pre, post = self._images(step, write)
        emulator = self.emulator
        return build_context(
            message=write.message,
            logical_name=logical,
            row_id=write.row_id,
            target=target,
            input_extra=[] if write.message != "Update" else [
                {"key": "ConcurrencyBehavior", "value": 0}
            ],
            output=[{"key": "id", "value": write.row_id}] if write.message == "Create" else [],
            pre_images=pre,
            post_images=post,
            step=StepFacts(
                str(step["sdkmessageprocessingstepid"]),
                str(step.get("name", "")),
                int(step.get("stage", 40)),
                int(step.get("mode", ASYNC_MODE)),
            ),
            identity=write.identity,
            organization_id=emulator.organization_id,
            organization_name=emulator.organization_name,
            business_unit_id=emulator.business_unit_id,
            operation_id=uuid.uuid4(),
            tag=write.tag,
        )  # fmt: skip

    def _post(self, step: Mapping[str, Any], write: Write) -> None:
        endpoints = {row["serviceendpointid"]: row for row in self._rows("serviceendpoints")}
        endpoint = endpoints.get(step["_eventhandler_value"])
        if endpoint is None:
            return
        name = str(endpoint.get("name", ""))
        failure, waiting = None, False
        if not endpoint.get("issaskeyset"):
            failure = NO_KEY
        elif name in self.emulator.unreachable_endpoints:
            failure = UNREACHABLE.format(name=name, address=endpoint.get("namespaceaddress"))
            waiting = True
        context = self._context(step, write)
        message_format = int(endpoint.get("messageformat", JSON_FORMAT))
        body, content_type = encoded(context, message_format)
        properties = self._claims(endpoint, write)
        if len(body) > MAX_MESSAGE_BYTES:
            body, content_type = encoded(truncated(context), message_format)
            properties["MessageMaxSizeExceeded"] = "true"
        self._record_job(step, write, failure, context["OperationId"], waiting=waiting)
        if failure is not None:
            return
        self._sequence += 1
        self.broker.send(
            PostedMessage(
                endpoint=name,
                contract=int(endpoint.get("contract", 6)),
                path=str(endpoint.get("path", "")),
                body=body,
                content_type=content_type,
                application_properties=properties,
                message_id=str(uuid.uuid4()),
                sequence_number=self._sequence,
                enqueued_time_utc=self.emulator.clock(),
            )
        )

    def _claims(self, endpoint: Mapping[str, Any], write: Write) -> dict[str, str]:
        host = self.emulator.environment_url.split("://", 1)[-1].split("/", 1)[0]
        claims = {
            CLAIMS + "Organization": host,
            CLAIMS + "EntityLogicalName": write.table.logical_name,
            CLAIMS + "RequestName": write.message,
            CLAIMS + "InitiatingUserAgent": write.headers.get("user-agent", ""),
        }
        if int(endpoint.get("userclaim", 1)) >= 2:
            claims[CLAIMS + "User"] = str(write.identity.system_user_id)
            claims[CLAIMS + "InitiatingUser"] = str(write.identity.system_user_id)
        return claims

    def _record_job(
        self,
        step: Mapping[str, Any],
        write: Write,
        failure: str | None,
        operation_id: str,
        *,
        waiting: bool = False,
    ) -> None:
        now = self.emulator.clock().isoformat().replace("+00:00", "Z")
        job_id = str(uuid.uuid4())
        row = {
            "asyncoperationid": job_id,
            "name": str(step.get("name", "")),
            "operationtype": 1,  # System Event
            "statecode": SUSPENDED if waiting else COMPLETED,
            "statuscode": WAITING if waiting else FAILED if failure else SUCCEEDED,
            "message": failure,
            "friendlymessage": failure,
            "completedon": None if waiting else now,
            "createdon": now,
            "correlationid": operation_id,
            "_owningextensionid_value": str(step["sdkmessageprocessingstepid"]),
            "_regardingobjectid_value": write.row_id,
            "_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname": (
                write.table.logical_name
            ),
        }
        self.emulator.store.put("asyncoperations", job_id, row)
