"""A local Dataverse that posts events: the steps `tools.endpoints apply` registers make the
emulator post, for each matching write, the context Dataverse would, with its claims, to a
local queue, and record a system job per post."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest

from shared.context import Entity, EntityReference, parse_context
from shared.dataverse import DataverseClient, RequestOptions
from shared.events import DataverseEvent
from shared.health import run_checks
from shared.registration import load_environment
from tests.registration import REGISTRATION_HANDLERS, environment, sas_key
from tools import demo
from tools.emulator import AnyToken, DataverseEmulator
from tools.emulator.posting import MAX_MESSAGE_BYTES, NO_KEY, PostedMessage
from tools.endpoints import reconcile

ENVIRONMENT = "https://contoso.crm.dynamics.com"
PATH = "dataverse-events"


def client(emulator: DataverseEmulator, token: str) -> DataverseClient:
    return DataverseClient(
        ENVIRONMENT, auth=AnyToken(token), transport=httpx.ASGITransport(app=emulator)
    )


async def registered(environment_name: str = "dev") -> DataverseEmulator:
    emulator = environment()
    async with client(emulator, "pipeline") as pipeline:
        spec = load_environment(environment_name, handlers=REGISTRATION_HANDLERS)
        await reconcile(pipeline, spec, apply=True, sas_key=sas_key)
    return emulator


def event_of(message: PostedMessage) -> DataverseEvent:
    return DataverseEvent.from_service_bus(message)


async def test_an_update_on_a_filtered_column_posts_the_context_dataverse_would() -> None:
    emulator = await registered()
    nancy = emulator.add_identity("nancy", "Nancy Davolio")
    async with client(emulator, "nancy") as person:
        contact = await person.create(
            "contacts", {"lastname": "Davolio", "emailaddress1": "old@example.com"}
        )
        await person.update(
            "contacts",
            contact,
            {"emailaddress1": "new@example.com"},
            options=RequestOptions(tag="from-a-flow"),
        )
    (message,) = emulator.broker.queues[PATH]  # no Create step for contacts: one message
    event = event_of(message)
    context = parse_context(message.body)
    assert (context.message_name, context.primary_entity_name) == ("Update", "contact")
    assert context.primary_entity_id == contact
    assert (context.stage, context.mode, context.depth) == (40, 1, 1)
    assert context.initiating_user_id == nancy.system_user_id
    assert context.raw("InitiatingUserAzureActiveDirectoryObjectId") == str(nancy.object_id)
    target = context.target
    assert isinstance(target, Entity)
    assert target["emailaddress1"] == "new@example.com"
    assert "lastname" not in target  # the Target carries what was written
    assert context.pre_entity_images["PreImage"]["emailaddress1"] == "old@example.com"
    post = context.post_entity_images["PostImage"]
    assert post["emailaddress1"] == "new@example.com"
    assert post.row_version is not None
    assert list(post.attributes) == ["emailaddress1"]  # the image's columns only
    assert context.shared_variables["tag"] == "from-a-flow"
    step = context.owning_extension
    assert step is not None
    assert step.name == "contoso-events: Update of contact"
    assert event.claims.organization == "contoso.crm.dynamics.com"
    assert event.claims.request_name == "Update"
    assert event.claims.entity_logical_name == "contact"
    assert event.claims.user == str(nancy.system_user_id)
    assert not event.truncated
    context.validate()
    (job,) = emulator.rows("asyncoperations")
    assert (job["statuscode"], job["operationtype"]) == (30, 1)


async def test_a_change_outside_the_filtering_attributes_is_not_posted() -> None:
    emulator = await registered()
    async with client(emulator, "nancy") as person:
        contact = await person.create("contacts", {"lastname": "Davolio"})
        await person.update("contacts", contact, {"telephone1": "555-0100"})
        await person.delete("contacts", contact)
    messages = list(emulator.broker.queues[PATH])
    assert [parse_context(m.body).message_name for m in messages] == ["Delete"]
    deleted = parse_context(messages[0].body)
    assert isinstance(deleted.target, EntityReference)
    assert deleted.pre_entity_images["AsynchronousStepPrimaryName"].logical_name == "contact"


async def test_a_create_posts_its_target_and_output_id() -> None:
    emulator = await registered()
    async with client(emulator, "nancy") as person:
        account = await person.create("accounts", {"name": "Northwind", "industrycode": 7})
    context = parse_context(emulator.broker.queues[PATH][0].body)
    assert context.message_name == "Create"
    assert context.output_parameters["id"] == account
    target = context.target
    assert isinstance(target, Entity)
    assert target["name"] == "Northwind"
    assert target["industrycode"].value == 7  # an OptionSetValue, as Dataverse types it


async def test_an_endpoint_without_a_key_fails_its_jobs_and_the_health_check_says_so() -> None:
    emulator = await registered()
    (endpoint,) = emulator.store.all("serviceendpoints")
    row = endpoint[0]
    row["issaskeyset"] = False  # a solution import brings endpoints without their key
    emulator.store.put("serviceendpoints", row["serviceendpointid"], row)
    async with client(emulator, "nancy") as person:
        await person.create("accounts", {"name": "Northwind"})
    assert emulator.broker.pending(PATH) == 0  # nothing delivered
    (job,) = emulator.rows("asyncoperations")
    assert (job["statuscode"], job["message"]) == (31, NO_KEY)
    from datetime import UTC, datetime, timedelta

    async with client(emulator, "monitor") as monitor:
        results = await run_checks(
            monitor,
            load_environment("dev", handlers=REGISTRATION_HANDLERS),
            since=datetime.now(UTC) - timedelta(minutes=5),
        )
    failed = [r for r in results if r.check == "failed-jobs" and not r.ok]
    assert len(failed) == 1
    assert "no SAS key" in failed[0].detail


async def test_an_unreachable_endpoint_leaves_its_jobs_waiting_after_a_network_error() -> None:
    emulator = await registered()
    emulator.unreachable_endpoints.add("contoso-events")
    async with client(emulator, "nancy") as person:
        await person.create("accounts", {"name": "Northwind"})
    (job,) = emulator.rows("asyncoperations")
    assert (job["statecode"], job["statuscode"]) == (1, 10)  # Suspended, Waiting: retried
    assert "network error" in job["message"]
    assert emulator.broker.pending(PATH) == 0


async def test_bypassing_custom_async_logic_posts_nothing() -> None:
    emulator = await registered()
    async with client(emulator, "nancy") as person:
        await person.create(
            "accounts",
            {"name": "Quiet"},
            options=RequestOptions(bypass_business_logic="CustomAsync"),
        )
    assert emulator.broker.pending(PATH) == 0
    assert emulator.rows("asyncoperations") == []


async def test_a_change_set_that_fails_posts_nothing_of_it() -> None:
    emulator = await registered()
    async with client(emulator, "nancy") as person:
        batch = person.batch()
        changeset = batch.changeset()
        changeset.create("accounts", {"name": "Rolled back"})
        changeset.update("accounts", uuid.uuid4(), {"name": "no such row"})
        with contextlib.suppress(Exception):
            await batch.send()
    assert emulator.rows("accounts") == []
    assert emulator.broker.pending(PATH) == 0


async def test_a_context_over_192_kb_is_posted_cut_down_with_message_max_size_exceeded() -> None:
    emulator = await registered()
    emulator.add_table("account")  # any column: room for a long one
    async with client(emulator, "nancy") as person:
        await person.create("accounts", {"name": "Big", "description": "x" * MAX_MESSAGE_BYTES})
    (message,) = emulator.broker.queues[PATH]
    event = event_of(message)
    assert event.truncated
    assert len(message.body) < 10_000
    assert event.context.target is None  # the handler must re-read the row


async def test_the_demo_runs_the_loop_and_the_loop_guard_stops_the_apps_own_change() -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert await demo.run("local") == 0
    text = output.getvalue()
    assert "+ step 'contoso-events: Create of account'" in text
    assert "Completed: handlers.audit_trail.record_audit_line, handlers.welcome_task" in text
    assert "handlers.contact_email_changed.mark_email_unverified" in text
    assert "event    Update of contact by the app" in text
    assert "Skipped (OwnChange)" in text
    assert "Skipped (Canary)" in text  # the health run's canary came back through its step
    assert "health   ok   canary" in text
    assert "delivered in" in text
    # The flow path: created by registration, its account row runs the opted-in handler, and
    # its canary is recognised by the canary column's value.
    assert "~ cloud flow Publish account changes to Service Bus: turned on" in text
    assert "Create of account through the cloud flow" in text
    assert "Completed: handlers.welcome_task.open_welcome_task\n" in text
    assert "flow: Publish account changes to Service Bus: delivered in" in text
    assert "settled: 9 completed" in text  # 6 from the service endpoint, 3 from the flow


PHONE_HANDLER = """
from shared import DataverseClient, RemoteExecutionContext, Router

router = Router()


@router.on(entity="contact", message="Update", attributes=["telephone1"], pre_image=["telephone1"])
async def phone_changed(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    return None
"""


def newcomer_package(root: Path, name: str) -> None:
    """The project's handlers plus the newcomer's phone handler, as package `name`."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in (Path(__file__).resolve().parents[2] / "handlers").glob("[!_]*.py"):
        (package / module.name).write_text(module.read_text())
    (package / "phone_changed.py").write_text(textwrap.dedent(PHONE_HANDLER))


async def test_a_new_handler_runs_in_the_demo_on_an_event_the_emulator_posted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newcomer_package(tmp_path, "demo_handlers")
    monkeypatch.syspath_prepend(str(tmp_path))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert await demo.run("local", "demo_handlers") == 0
    text = output.getvalue()
    phone = text[text.index("changes the contact's phone") :]
    assert "demo_handlers.phone_changed.phone_changed" in phone.split("\n\n")[0]


def test_replay_accepts_a_capture_of_any_organization(tmp_path: Path) -> None:
    from tests.conftest import context_bytes
    from tools import replay

    document = json.loads(context_bytes("account-create.json"))
    document["OrganizationId"] = str(uuid.uuid4())
    document["OrganizationName"] = "fabrikam"
    capture = tmp_path / "capture.json"
    capture.write_text(json.dumps(document))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert replay.main([str(capture)]) == 0
    assert "outcome  Completed" in output.getvalue()


def test_the_demo_prints_each_events_span_tree_with_trace() -> None:
    # In its own process: --trace installs a global tracer provider.
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--trace"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "  trace    process servicebus" in done.stdout
    assert "  trace      handler handlers.welcome_task.open_welcome_task" in done.stdout
    assert "  trace        PATCH tasks" in done.stdout


async def test_the_demos_settlement_takes_a_dead_letter_as_service_bus_does() -> None:
    # handle_message dead-letters with ServiceBusMessageActions' keyword names.
    from datetime import UTC, datetime

    from shared.dispatch import Dispatcher
    from shared.routing import Router
    from shared.servicebus import handle_message
    from shared.settings import Settings

    message = PostedMessage(
        endpoint="contoso-events",
        contract=6,
        path=PATH,
        body=b"not a context",
        content_type="application/json",
        application_properties={},
        message_id="m-1",
        sequence_number=1,
        enqueued_time_utc=datetime.now(UTC),
    )
    settlement = demo.Settlement()
    dispatcher = Dispatcher(Router(), lambda: None, Settings())  # type: ignore[arg-type, return-value]
    await handle_message(dispatcher, message, settlement)
    assert settlement.settled == {"m-1": "dead-lettered (InvalidJson)"}
