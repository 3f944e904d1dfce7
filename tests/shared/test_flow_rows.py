"""Rows a Power Automate flow publishes (shared/context/flow.py): decoded into the context a
service endpoint posts for the same change, routed only to routes that opt in, checked against
the allowed organizations, and registered as code.

The flow's trigger body follows the Dataverse connector as documented (Learn, "Trigger flows
when a row is added, modified, or deleted": `body/SdkMessage` is Create, Update or Delete; a
Delete gives the row's id only) and as public flow definitions show its fields (ItemInternalId,
SdkMessage, RunAsSystemUserId, RowVersion, `_<lookup>_type`, `_<choice>_label`); the emulator
produces it (tools/emulator/flows.py) from the same write that its service endpoint posts."""

from __future__ import annotations

import textwrap
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from shared.context import Entity, EntityReference, OptionSetValue, parse_context
from shared.dataverse import DataverseClient
from shared.dispatch import Completed, DeadLetter, Dispatcher
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.registration import load_environment
from shared.routing import Router
from shared.sdk_names import RouteError
from shared.settings import Settings
from tests.registration import environment, sas_key
from tools.demo import connect_reference
from tools.emulator import AnyToken, DataverseEmulator
from tools.emulator.posting import PostedMessage
from tools.endpoints import reconcile

ENVIRONMENT = "https://contoso.crm.dynamics.com"
FLOW = "Publish account changes"
SPEC = """
    dataverse_url = "https://contoso.crm.dynamics.com"

    [[endpoints]]
    name = "contoso-events"
    contract = "queue"
    namespace = "local"
    path = "dataverse-events"
    message_format = "json"
    user_claim = "userid"
    sas_key_name = "dataverse-send"
    sas_key_env = "DATAVERSE_SAS_KEY"

    [[endpoints.steps]]
    message = "Create"
    entity = "account"

    [[endpoints.steps]]
    message = "Update"
    entity = "account"

    [[endpoints.steps]]
    message = "Delete"
    entity = "account"

    [[flows]]
    name = "Publish account changes"
    connection_reference = "contoso_servicebus"
    dataverse_connection_reference = "contoso_dataverse"
    table = "account"
    queue = "flow-events"
"""


def client(emulator: DataverseEmulator, token: str) -> DataverseClient:
    return DataverseClient(
        ENVIRONMENT, auth=AnyToken(token), transport=httpx.ASGITransport(app=emulator)
    )


def connect(emulator: DataverseEmulator, *references: str) -> None:
    """What the maker does by hand: a connection behind each connection reference."""
    for reference in references:
        connect_reference(emulator, reference)


async def registered(tmp_path: Path, *, connected: bool = True) -> DataverseEmulator:
    (tmp_path / "flows.toml").write_text(textwrap.dedent(SPEC))
    spec = load_environment("flows", tmp_path, handlers=None)
    emulator = environment()
    if connected:
        connect(emulator, "contoso_servicebus", "contoso_dataverse")
    async with client(emulator, "pipeline") as pipeline:
        await reconcile(pipeline, spec, apply=True, sas_key=sas_key)
    return emulator


def event(message: PostedMessage) -> DataverseEvent:
    return DataverseEvent.from_service_bus(message)


async def test_a_flow_row_decodes_to_the_service_endpoints_context_of_the_same_change(
    tmp_path: Path,
) -> None:
    emulator = await registered(tmp_path)
    async with client(emulator, "nancy") as nancy:
        contact = await nancy.create("contacts", {"lastname": "Davolio"})
        account = await nancy.create(
            "accounts",
            {"name": "Northwind", "industrycode": 7,
             "primarycontactid@odata.bind": f"/contacts({contact})"},
        )  # fmt: skip
        await nancy.update("accounts", account, {"name": "Northwind Traders"})
        await nancy.delete("accounts", account)
    posted = list(emulator.broker.queues["dataverse-events"])
    flowed = list(emulator.broker.queues["flow-events"])
    assert [m.application_properties.get("DataverseFlowRunId") is None for m in posted] == [
        True
    ] * 3
    assert len(flowed) == 3
    for endpoint, flow in zip(posted, flowed, strict=True):
        expected = parse_context(endpoint.body)
        found = event(flow).context
        assert found.message_name == expected.message_name
        assert found.primary_entity_name == expected.primary_entity_name == "account"
        assert found.primary_entity_id == expected.primary_entity_id == account
        if expected.message_name == "Delete":
            assert isinstance(found.target, EntityReference)
            assert found.target.id == account
            continue
        assert isinstance(found.target, Entity)
        assert isinstance(expected.target, Entity)
        # The flow carries the whole row; the service endpoint the columns written.
        for column, value in expected.target.attributes.items():
            assert found.target[column] == value, column
    created = event(flowed[0]).context
    assert isinstance(created.target, Entity)
    assert created.target["industrycode"] == OptionSetValue(7)
    assert created.target["primarycontactid"] == EntityReference("contact", contact)
    assert created.output_parameters["id"] == account
    # What a flow's message cannot carry.
    assert not created.pre_entity_images
    assert created.initiating_user_azure_active_directory_object_id is None
    # Redeliveries of one run share one OperationId; two runs differ.
    again = event(flowed[0]).context
    assert again.operation_id == created.operation_id != event(flowed[1]).context.operation_id


def test_a_row_is_recognised_by_its_body_alone_and_typed_from_its_annotations() -> None:
    row_id = str(uuid.uuid4())
    contact = str(uuid.uuid4())
    body = {
        "@odata.etag": 'W/"1234"',
        "accountid": row_id,
        "name": "Fabrikam",
        "revenue": 1000.5,
        "revenue_base": 1000.5,
        "customertypecode": 3,
        "_customertypecode_label": "Customer",
        "_primarycontactid_value": contact,
        "_primarycontactid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
        "_primarycontactid_type": "contact",
        "modifiedon": "2026-12-02T10:00:00Z",
        "ItemInternalId": row_id,
        "SdkMessage": "Update",
        "RunAsSystemUserId": str(uuid.uuid4()),
        "RowVersion": "1234",
    }
    found = DataverseEvent(orjson.dumps(body), transport="servicebus").context  # no properties
    assert (found.message_name, found.primary_entity_name) == ("Update", "account")
    target = found.target
    assert isinstance(target, Entity)
    assert target["customertypecode"] == OptionSetValue(3)
    assert target["revenue"].value == Decimal("1000.5")
    assert target["primarycontactid"] == EntityReference("contact", uuid.UUID(contact))
    assert target["modifiedon"].year == 2026
    assert "_customertypecode_label" not in target.attributes
    assert "ItemInternalId" not in target.attributes


def test_a_delete_without_its_table_is_refused_with_what_to_set() -> None:
    body = {"ItemInternalId": str(uuid.uuid4()), "SdkMessage": "Delete"}
    with pytest.raises(InvalidMessage, match="DataverseTable") as raised:
        _ = DataverseEvent(orjson.dumps(body)).context
    assert raised.value.reason == "NotAnExecutionContext"
    named = DataverseEvent(orjson.dumps(body), properties={"DataverseTable": "account"})
    assert named.context.primary_entity_name == "account"


def test_anything_else_is_still_not_an_execution_context() -> None:
    bodies: list[object] = [
        {"SdkMessage": "Update"},
        {"SdkMessage": "Merge", "ItemInternalId": "x"},
    ]
    for body in bodies:
        with pytest.raises(InvalidMessage) as raised:
            _ = DataverseEvent(orjson.dumps(body)).context
        assert raised.value.reason == "NotAnExecutionContext"


def row_event(host: str | None) -> DataverseEvent:
    row_id = str(uuid.uuid4())
    body = {"accountid": row_id, "name": "A", "ItemInternalId": row_id, "SdkMessage": "Create"}
    properties = {"DataverseOrganization": host} if host else {}
    return DataverseEvent(orjson.dumps(body), properties=properties, transport="servicebus")


async def test_routes_take_flow_rows_only_when_they_opt_in_and_only_from_listed_hosts() -> None:
    ran: list[str] = []
    router = Router()

    @router.on(entity="account", message="Create")
    async def endpoint_only(context: object, dataverse: object) -> None:
        ran.append("endpoint_only")

    @router.on(entity="account", message="Create", flows=True)
    async def any_publisher(context: object, dataverse: object) -> None:
        ran.append("any_publisher")

    settings = Settings(allowed_organizations=frozenset({"contoso.crm.dynamics.com"}))
    dispatcher = Dispatcher(router, lambda: None, settings)  # type: ignore[arg-type,return-value]
    outcome = await dispatcher.process(row_event("contoso.crm.dynamics.com"))
    assert isinstance(outcome, Completed)
    assert ran == ["any_publisher"]
    for host in (None, "fabrikam.crm.dynamics.com"):
        refused = await dispatcher.process(row_event(host))
        assert isinstance(refused, DeadLetter)
        assert refused.reason == "UnknownOrganization"
        assert "DataverseOrganization" in refused.description
    with pytest.raises(RouteError, match="image"):
        router.on(entity="account", message="Update", flows=True, pre_image=["name"])


async def test_registration_creates_the_flow_and_turns_it_on_only_once_connected(
    tmp_path: Path,
) -> None:
    emulator = await registered(tmp_path, connected=False)
    (flow,) = emulator.rows("workflows")
    assert (flow["name"], flow["category"], flow["statecode"]) == (FLOW, 5, 0)
    schemas = sorted(row["schemaname"] for row in emulator.rows("environmentvariabledefinitions"))
    assert schemas == ["contoso_DataverseEventsQueue", "contoso_DataverseOrganization"]
    async with client(emulator, "nancy") as nancy:
        await nancy.create("accounts", {"name": "While off"})
    assert emulator.broker.pending("flow-events") == 0  # off: nothing published
    connect(emulator, "contoso_servicebus")
    async with client(emulator, "pipeline") as pipeline:
        spec = load_environment("flows", tmp_path, handlers=None)
        report = await reconcile(pipeline, spec, apply=True, sas_key=sas_key)
    assert any("contoso_dataverse" in note for note in report.notes)  # still one to connect
    connect(emulator, "contoso_dataverse")
    async with client(emulator, "pipeline") as pipeline:
        report = await reconcile(pipeline, spec, apply=True, sas_key=sas_key)
    assert any("turned on" in change for change in report.changes)
    assert emulator.rows("workflows")[0]["statecode"] == 1
    async with client(emulator, "pipeline") as pipeline:
        report = await reconcile(pipeline, spec, apply=True, sas_key=sas_key)
    assert not [change for change in report.changes if "flow" in change]  # converged


async def test_a_flow_without_its_trigger_registration_publishes_nothing_and_health_says_so(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.health import run_checks

    emulator = await registered(tmp_path)
    spec = load_environment("flows", tmp_path, handlers=None)

    async def trigger_check() -> list[tuple[bool, str]]:
        async with client(emulator, "monitor") as monitor:
            results = await run_checks(monitor, spec, since=datetime.now(UTC) - timedelta(1))
        return [(r.ok, r.detail) for r in results if r.check == "flow-trigger"]

    assert await trigger_check() == [(True, "its trigger is registered for account")]
    (callback,) = emulator.rows("callbackregistrations")
    assert callback["entityname"] == "account"
    assert callback["message"] == 7  # Create, Update or Delete
    emulator.store.delete("callbackregistrations", callback["callbackregistrationid"])
    async with client(emulator, "nancy") as nancy:
        await nancy.create("accounts", {"name": "Unseen by the flow"})
    assert emulator.broker.pending("flow-events") == 0
    ((ok, detail),) = await trigger_check()
    assert not ok
    assert "never triggered" in detail


def test_the_importable_solution_holds_the_flow_its_references_and_variables(
    tmp_path: Path,
) -> None:
    """Structure only (no Dataverse imports it here): the packed layout exported solutions
    show, every component a root component, and the flow's JSON what registration creates."""
    import json
    import zipfile
    from xml.etree import ElementTree

    from tools.flow_registration import definition
    from tools.flow_solution import build, flow_id

    (tmp_path / "flows.toml").write_text(textwrap.dedent(SPEC))
    spec = load_environment("flows", tmp_path, handlers=None)
    out = tmp_path / "flows.zip"
    names = build(spec, out)
    workflow_id = flow_id(spec, FLOW)
    json_name = f"Workflows/Publishaccountchanges-{workflow_id.upper()}.json"
    assert json_name in names
    with zipfile.ZipFile(out) as archive:
        solution = ElementTree.fromstring(archive.read("solution.xml"))
        customizations = ElementTree.fromstring(archive.read("customizations.xml"))
        flow = json.loads(archive.read(json_name))
        variable = ElementTree.fromstring(
            archive.read(
                "environmentvariabledefinitions/contoso_DataverseEventsQueue/"
                "environmentvariabledefinition.xml"
            )
        )
    assert flow == json.loads(definition(spec, spec.flows[0]))
    roots = {
        (r.get("type"), r.get("id") or r.get("schemaName")) for r in solution.iter("RootComponent")
    }
    assert roots == {
        ("29", "{" + workflow_id + "}"),
        ("380", "contoso_DataverseEventsQueue"),
        ("380", "contoso_DataverseOrganization"),
    }
    (workflow,) = customizations.iter("Workflow")
    assert workflow.findtext("JsonFileName") == "/" + json_name
    assert workflow.findtext("Category") == "5"
    references = {
        r.get("connectionreferencelogicalname"): r.findtext("connectorid")
        for r in customizations.iter("connectionreference")
    }
    assert references == {
        "contoso_dataverse": "/providers/Microsoft.PowerApps/apis/shared_commondataserviceforapps",
        "contoso_servicebus": "/providers/Microsoft.PowerApps/apis/shared_servicebus",
    }
    assert variable.findtext("defaultvalue") == "flow-events"
