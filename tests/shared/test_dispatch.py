"""Dispatcher: every outcome, decided in one place, with the emulator behind the client."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest

from shared.dataverse import DataverseClient
from shared.dispatch import Completed, DeadLetter, Dispatcher, Retry, Skipped
from shared.errors import PermanentError, TransientError
from shared.routing import Router
from shared.settings import Settings, SettingsError
from tests.dataverse_doubles import FakeTime, emulated_client
from tests.events import ORGANIZATION_ID, claims, event
from tools.emulator import DataverseEmulator

SETTINGS = Settings(allowed_organizations=frozenset({ORGANIZATION_ID}))


@pytest.fixture
def emulator() -> DataverseEmulator:
    return DataverseEmulator()


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def dataverse(emulator: DataverseEmulator, time: FakeTime) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator, time=time, budget=30) as client:
        yield client


class Calls:
    """Handlers that record their runs and can be told to fail."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.failures: dict[str, Exception] = {}

    async def run(self, name: str) -> None:
        self.runs.append(name)
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure


def recording_handler(calls: Calls, name: str) -> Any:
    async def handler(context: Any, dataverse: Any) -> None:
        await calls.run(name)

    handler.__qualname__ = name
    return handler


def router_with(calls: Calls, *names: str, entity: str = "account") -> Router:
    router = Router()
    for name in names:
        router.on(entity=entity, message="*")(recording_handler(calls, name))
    return router


def dispatcher(
    router: Router, dataverse: DataverseClient, settings: Settings = SETTINGS
) -> Dispatcher:
    return Dispatcher(router, dataverse, settings)


async def test_handlers_run_in_order_and_the_event_completes(dataverse: DataverseClient) -> None:
    calls = Calls()
    outcome = await dispatcher(router_with(calls, "first", "second"), dataverse).process(event())
    assert outcome == Completed((f"{__name__}.first", f"{__name__}.second"))
    assert calls.runs == ["first", "second"]


async def test_an_unreadable_body_is_dead_lettered_with_its_reason(
    dataverse: DataverseClient,
) -> None:
    calls = Calls()
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(event(body=b"{not json"))
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "InvalidJson"
    assert "not valid JSON" in outcome.description
    assert calls.runs == []


async def test_events_of_unknown_organizations_are_dead_lettered(
    dataverse: DataverseClient,
) -> None:
    calls = Calls()
    foreign = event(
        changes={"OrganizationId": str(uuid4()), "OrganizationName": "fabrikam"},
        properties=claims("fabrikam.crm.dynamics.com"),
    )
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(foreign)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "UnknownOrganization"
    assert "fabrikam" in outcome.description
    assert "ALLOWED_ORGANIZATIONS" in outcome.description
    assert calls.runs == []


async def test_the_allow_list_judges_the_body_and_the_claim(dataverse: DataverseClient) -> None:
    ours = claims("contoso.crm.dynamics.com")
    for allowed in (
        {"contoso"},
        {ORGANIZATION_ID},
        {ORGANIZATION_ID, "contoso.crm.dynamics.com"},
    ):
        settings = Settings(allowed_organizations=frozenset(allowed))
        outcome = await dispatcher(Router(), dataverse, settings).process(event(properties=ours))
        assert outcome == Completed(), allowed
    # A host alone cannot vouch for a body: the body's organization must be listed.
    hosts_only = Settings(allowed_organizations=frozenset({"contoso.crm.dynamics.com"}))
    outcome = await dispatcher(Router(), dataverse, hosts_only).process(event(properties=ours))
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "UnknownOrganization"
    assert "add its id" in outcome.description


async def test_our_claim_never_vouches_for_a_foreign_body(dataverse: DataverseClient) -> None:
    # Any one of body id, body name or claim host sufficed: our claim with a foreign body
    # completed.
    foreign = event(
        changes={"OrganizationId": str(uuid4()), "OrganizationName": "fabrikam"},
        properties=claims("contoso.crm.dynamics.com"),
    )
    settings = Settings(
        allowed_organizations=frozenset({ORGANIZATION_ID, "contoso.crm.dynamics.com"})
    )
    outcome = await dispatcher(router_with(Calls(), "h"), dataverse, settings).process(foreign)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "UnknownOrganization"


async def test_a_foreign_claim_on_our_body_is_refused_where_hosts_are_listed(
    dataverse: DataverseClient,
) -> None:
    settings = Settings(
        allowed_organizations=frozenset({ORGANIZATION_ID, "contoso.crm.dynamics.com"})
    )
    spoofed = event(properties=claims("fabrikam.crm.dynamics.com"))
    outcome = await dispatcher(router_with(Calls(), "h"), dataverse, settings).process(spoofed)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "UnknownOrganization"
    assert "claim" in outcome.description


@pytest.mark.parametrize("transport", ["servicebus", "eventhub"])
async def test_a_message_without_claims_is_refused_where_dataverse_always_sets_them(
    dataverse: DataverseClient, transport: str
) -> None:
    # A message with no claims and our id in the body was accepted.
    calls = Calls()
    bare = dataclasses.replace(event(properties={}), transport=transport)
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(bare)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "MissingClaims"
    assert calls.runs == []


async def test_sender_controlled_names_are_escaped_and_clipped_in_descriptions(
    dataverse: DataverseClient,
) -> None:
    hostile = event(
        changes={"OrganizationId": str(uuid4()), "OrganizationName": "evil\n\x00" + "x" * 10_000},
        properties=claims("fabrikam.crm.dynamics.com"),
    )
    outcome = await dispatcher(Router(), dataverse).process(hostile)
    assert isinstance(outcome, DeadLetter)
    assert "\n" not in outcome.description
    assert "\x00" not in outcome.description
    assert len(outcome.description) < 600


def test_an_empty_allow_list_is_refused_in_azure_and_warned_locally(
    dataverse: DataverseClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SettingsError, match="ALLOWED_ORGANIZATIONS"):
        Dispatcher(Router(), dataverse, Settings(in_azure=True))
    with caplog.at_level(logging.WARNING):
        Dispatcher(Router(), dataverse, Settings(in_azure=False))
    assert "ALLOWED_ORGANIZATIONS is empty" in caplog.text


async def test_a_tag_alone_never_hides_a_change(dataverse: DataverseClient) -> None:
    # Any user can set `tag` on a Web API call: an ordinary user's tagged update was skipped
    # as OwnChange, with no handler run and no audit.
    calls = Calls()
    settings = Settings(
        allowed_organizations=SETTINGS.allowed_organizations,
        write_tag="contoso-events",  # the fixture's SharedVariables carry this tag
        app_user_object_id="aad00000-0000-4000-8000-0000000000ff",  # not the initiator
    )
    outcome = await dispatcher(router_with(calls, "h"), dataverse, settings).process(event())
    assert outcome == Completed((f"{__name__}.h",))
    assert calls.runs
    no_app_user = Settings(
        allowed_organizations=SETTINGS.allowed_organizations, write_tag="contoso-events"
    )
    outcome = await dispatcher(router_with(Calls(), "h"), dataverse, no_app_user).process(event())
    assert isinstance(outcome, Completed)


async def test_events_initiated_by_our_app_user_are_skipped(dataverse: DataverseClient) -> None:
    calls = Calls()
    settings = Settings(
        allowed_organizations=SETTINGS.allowed_organizations,
        write_tag="contoso-events",
        app_user_object_id="aad00000-0000-4000-8000-0000000000a1",
    )
    outcome = await dispatcher(router_with(calls, "h"), dataverse, settings).process(event())
    assert outcome == Skipped(
        "OwnChange", "initiated by this app's application user (tag 'contoso-events')"
    )
    assert calls.runs == []
    untagged = Settings(
        allowed_organizations=SETTINGS.allowed_organizations,
        app_user_object_id="AAD00000-0000-4000-8000-0000000000A1",  # case does not matter
    )
    outcome = await dispatcher(router_with(Calls(), "h"), dataverse, untagged).process(event())
    assert outcome == Skipped("OwnChange", "initiated by this app's application user")


async def test_no_route_completes(
    dataverse: DataverseClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        outcome = await dispatcher(router_with(Calls(), "h", entity="lead"), dataverse).process(
            event()
        )
    assert outcome == Completed()
    assert "no handler for Create of account" in caplog.text


async def test_a_transient_error_is_retried(dataverse: DataverseClient) -> None:
    calls = Calls()
    calls.failures["h"] = TransientError("the ERP is down")
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(event())
    assert outcome == Retry("TransientError", f"{__name__}.h: the ERP is down")


async def test_a_handler_bug_is_retried(dataverse: DataverseClient) -> None:
    calls = Calls()
    calls.failures["h"] = KeyError("missing")
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "HandlerError"
    assert "KeyError" in outcome.detail


async def test_a_permanent_error_is_dead_lettered_naming_the_handler(
    dataverse: DataverseClient,
) -> None:
    calls = Calls()
    calls.failures["h"] = PermanentError("account has no owner")
    outcome = await dispatcher(router_with(calls, "h"), dataverse).process(event())
    assert outcome == DeadLetter("HandlerRejected", f"{__name__}.h: account has no owner")


async def test_a_dataverse_refusal_is_dead_lettered_with_its_code(
    dataverse: DataverseClient,
) -> None:
    router = Router()

    @router.on(entity="account")
    async def update_missing(context: Any, dataverse: DataverseClient) -> None:
        await dataverse.update("accounts", uuid4(), {"name": "x"})

    outcome = await dispatcher(router, dataverse).process(event())
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "DataverseRejected"
    assert "update_missing" in outcome.description
    assert "404 0x80040217" in outcome.description


async def test_a_429_storm_becomes_retry_within_the_budget(
    dataverse: DataverseClient, emulator: DataverseEmulator, time: FakeTime
) -> None:
    router = Router()

    @router.on(entity="account")
    async def create_task(context: Any, dataverse: DataverseClient) -> None:
        await dataverse.create("tasks", {"subject": "x"})

    emulator.inject(429, count=1000, retry_after=8)
    started = time.now
    outcome = await dispatcher(router, dataverse).process(event())
    assert isinstance(outcome, Retry)
    assert outcome.reason == "Throttled"
    assert time.now - started <= 120  # never blocked past the pause bound (max_pause_seconds)
    assert emulator.rows("tasks") == []


async def test_a_redelivery_reruns_only_the_unfinished_handlers(dataverse: DataverseClient) -> None:
    calls = Calls()
    calls.failures["second"] = TransientError("crashed mid-way")
    subject = dispatcher(router_with(calls, "first", "second", "third"), dataverse)
    first = await subject.process(event())
    assert isinstance(first, Retry)
    assert calls.runs == ["first", "second"]
    second = await subject.process(event(message_id="redelivered"))
    assert second == Completed((f"{__name__}.second", f"{__name__}.third"))
    assert calls.runs == ["first", "second", "second", "third"]
    third = await subject.process(event(message_id="duplicate"))
    assert third == Skipped("Duplicate", "every handler had already applied this event")
    assert calls.runs == ["first", "second", "second", "third"]


async def test_each_step_is_its_own_event_for_idempotency(dataverse: DataverseClient) -> None:
    calls = Calls()
    subject = dispatcher(router_with(calls, "h"), dataverse)
    await subject.process(event())
    other_step = {"Id": str(uuid4()), "LogicalName": "sdkmessageprocessingstep", "Name": None}
    outcome = await subject.process(event(changes={"OwningExtension": other_step}))
    assert isinstance(outcome, Completed)
    assert calls.runs == ["h", "h"]


async def test_a_claim_held_by_another_delivery_is_retried_later(
    dataverse: DataverseClient, time: FakeTime
) -> None:
    calls = Calls()
    subject = Dispatcher(router_with(calls, "h"), dataverse, SETTINGS, sleep=time.sleep)
    from shared.idempotency import claim_key

    await subject.idempotency.claim(claim_key(event(), f"{__name__}.h"))  # another instance
    outcome = await subject.process(event())
    assert outcome == Retry("InProgress", f"{__name__}.h is running in another delivery")
    assert calls.runs == []
    assert 2.0 <= sum(time.sleeps) < 3.0  # waited for the holder before giving the message back
    assert time.sleeps[:3] == [0.02, 0.04, 0.08]


async def test_a_truncated_event_runs_column_filtered_handlers(dataverse: DataverseClient) -> None:
    router = Router()
    seen: list[object] = []

    @router.on(entity="account", message="Update", attributes=["name"])
    async def on_name(context: Any, dataverse: Any, event: Any) -> None:
        seen.append((context.target, event.truncated))

    truncated = event(
        "account-update-truncated.json", properties={**claims(), "MessageMaxSizeExceeded": "True"}
    )
    assert isinstance(await dispatcher(router, dataverse).process(truncated), Completed)
    assert seen == [(None, True)]
    untruncated = event("account-update-truncated.json", message_id="other")
    untruncated_outcome = await dispatcher(router, dataverse).process(untruncated)
    assert untruncated_outcome == Skipped(
        "NoChangedColumns", "no handler's columns are in the Target"
    )


async def test_log_lines_carry_the_event_fields(
    dataverse: DataverseClient, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router()
    logger = logging.getLogger("handlers.test")

    @router.on(entity="account")
    async def talkative(context: Any, dataverse: Any) -> None:
        logger.info("working")

    with caplog.at_level(logging.INFO):
        from shared import observability

        caplog.handler.addFilter(observability._filter)
        await dispatcher(router, dataverse).process(event(message_id="m-77"))
    record = next(record for record in caplog.records if record.getMessage() == "working")
    assert record.message_id == "m-77"  # type: ignore[attr-defined]
    assert record.operation_id == "0e000000-0000-4000-8000-000000000001"  # type: ignore[attr-defined]
    assert record.correlation_id == "c0ffee00-1111-4222-8333-444455556666"  # type: ignore[attr-defined]
    assert (record.entity, record.message_name) == ("account", "Create")  # type: ignore[attr-defined]
    assert record.handler == router.routes[0].name  # type: ignore[attr-defined]
    assert record.handler.endswith(".talkative")  # type: ignore[attr-defined]
    assert "Northwind" not in caplog.text  # attribute values stay out of logs
