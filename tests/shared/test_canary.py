"""The canary: recognised before any guard or handler, only from the app's own user, recorded
per path in storage every instance shares, and reported per path by the next health run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from shared.canary import (
    InMemoryCanaryStore,
    Mark,
    TableCanaryStore,
    canary_nonce,
    canary_paths,
    report,
)
from shared.dispatch import Completed, Dispatcher, Retry, Skipped
from shared.health import CheckResult
from shared.registration import load_environment
from shared.routing import Router
from shared.settings import Settings
from tests.events import ORGANIZATION_ID, event

APP_USER = "a9900000-0000-4000-8000-0000000000a1"
STEP = "contoso-events: canary (Update of account)"


def canary_event(initiator: str, tag: str = "canary:0123456789abcdef") -> object:
    return event(
        "contact-update.json",
        changes={
            "InitiatingUserAzureActiveDirectoryObjectId": initiator,
            "SharedVariables": [{"key": "tag", "value": tag}],
            "OwningExtension": {
                "Id": str(uuid4()),
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": STEP,
                "RowVersion": None,
            },
        },
    )


def dispatcher(store: object, ran: list[str]) -> Dispatcher:
    router = Router()

    @router.on(entity="*", message="*")
    async def anything(context: object, dataverse: object) -> None:
        ran.append("handler")

    settings = Settings(
        allowed_organizations=frozenset({ORGANIZATION_ID}), app_user_object_id=APP_USER
    )
    return Dispatcher(router, lambda: None, settings, canaries=store, clock=lambda: 1000.0)  # type: ignore[arg-type, return-value]


def test_the_nonce_is_read_from_the_tag_only() -> None:
    assert canary_nonce([{"key": "tag", "value": "canary:abc"}]) == "abc"
    assert canary_nonce([{"key": "tag", "value": "dataverse-event-consumers"}]) is None
    assert canary_nonce([{"key": "other", "value": "canary:abc"}]) is None
    assert canary_nonce(None) is None


async def test_the_apps_canary_is_recorded_per_path_and_runs_no_handler() -> None:
    store, ran = InMemoryCanaryStore(), list[str]()
    outcome = await dispatcher(store, ran).process(canary_event(APP_USER))  # type: ignore[arg-type]
    assert isinstance(outcome, Skipped)
    assert outcome.reason == "Canary"
    assert ran == []
    assert await store.arrivals() == {STEP: Mark("0123456789abcdef", 1000.0)}


async def test_a_canary_tag_from_anyone_else_is_an_ordinary_event() -> None:
    store, ran = InMemoryCanaryStore(), list[str]()
    outcome = await dispatcher(store, ran).process(canary_event(str(uuid4())))  # type: ignore[arg-type]
    assert isinstance(outcome, Completed)
    assert ran == ["handler"]
    assert await store.arrivals() == {}


async def test_an_arrival_the_store_refuses_is_retried_not_lost() -> None:
    class Broken(InMemoryCanaryStore):
        async def arrived(self, path: str, mark: Mark) -> None:
            raise OSError("storage unavailable")

    outcome = await dispatcher(Broken(), []).process(canary_event(APP_USER))  # type: ignore[arg-type]
    assert isinstance(outcome, Retry)
    assert outcome.reason == "StoreUnavailable"


def test_the_report_says_delivered_or_silent_with_the_likely_causes() -> None:
    spec = load_environment("local")
    # One path per endpoint's canary step, and one per flow that publishes the canary's table.
    path, flow = canary_paths(spec)
    assert flow == "flow: Publish account changes to Service Bus"
    sent = Mark("n1", 100.0)
    delivered = report(spec, sent, {path: Mark("n1", 104.0)}, 1000.0, [])
    assert [r.detail for r in delivered] == [
        "delivered in 4 s",
        "silent for 15 min; no other check failed",
    ]
    stale = report(
        spec,
        sent,
        {path: Mark("n0", 50.0)},
        100.0 + 20 * 60,
        [CheckResult("step-enabled", "x", False, "disabled")],
    )
    assert not stale[0].ok
    assert stale[0].detail == "silent for 20 min; likely: step-enabled"
    assert report(spec, None, {}, 0.0, [])[0].ok  # the first run only sends


def test_registration_adds_a_canary_step_to_every_endpoint() -> None:
    spec = load_environment("local")
    canary_steps = [s for e in spec.endpoints for s in e.steps if s.canary]
    assert len(canary_steps) == len(spec.endpoints)
    (step,) = canary_steps
    assert (step.entity, step.message, step.filtering_attributes) == (
        "account",
        "Update",
        ("description",),
    )
    assert step.name("contoso-events") == STEP


@pytest.fixture
async def table_store(azurite: str) -> AsyncIterator[TableCanaryStore]:
    from azure.data.tables.aio import TableClient

    client = TableClient.from_connection_string(azurite, table_name=f"canary{uuid4().hex[:8]}")
    yield TableCanaryStore(client)
    await client.delete_table()
    await client.close()


async def test_the_table_store_is_shared_by_whoever_reads_it(
    table_store: TableCanaryStore,
) -> None:
    assert await table_store.last_sent() is None
    await table_store.sent(Mark("n1", 10.0))
    await table_store.arrived(STEP, Mark("n1", 12.5))
    assert await table_store.last_sent() == Mark("n1", 10.0)
    assert await table_store.arrivals() == {STEP: Mark("n1", 12.5)}
