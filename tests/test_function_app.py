"""The app as the Functions host runs it: indexing, then trigger functions called with objects
built by the real converters from the host's data shapes, through the real dispatcher and
handlers, with the Dataverse emulator behind the client and settlement recorded."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from handlers.welcome_task import welcome_task_id
from shared.app import Runtime, build
from shared.dataverse import DataverseClient
from shared.dispatch import Dispatcher
from shared.errors import TransientError
from shared.eventhub import PARK_AFTER_RETRIES, BatchNeedsRetry
from shared.events import DataverseEvent
from shared.idempotency import InMemoryIdempotencyStore, event_key
from shared.poison import InMemoryPoisonStore, ParkedEvent
from shared.registration import load_environment
from shared.routing import Router
from shared.servicebus import RedeliveryRequested, SettlementFailed, handle_message
from shared.settings import AZURE_MARKERS, Settings
from tests.conftest import context_bytes
from tests.dataverse_doubles import FakeTime, emulated_client
from tests.events import ORGANIZATION_ID, claims
from tests.host_shapes import RecordingActions, event_hub_events, sdk_service_bus_message
from tools.emulator import DataverseEmulator

TRIGGER_SETTINGS = {
    "DATAVERSE_QUEUE_NAME": "dataverse-events",
    "DATAVERSE_TOPIC_NAME": "dataverse",
    "DATAVERSE_SUBSCRIPTION_NAME": "consumers",
    "DATAVERSE_EVENT_HUB_NAME": "dataverse-hub",
    "DATAVERSE_EVENT_HUB_CONSUMER_GROUP": "$Default",
    "ALLOWED_ORGANIZATIONS": ORGANIZATION_ID,
    "HOUSEKEEPING_SCHEDULE": "0 30 3 * * *",
    "DATAVERSE_ENVIRONMENT": "dev",
    "HEALTH_SCHEDULE": "0 */15 * * * *",
}


def fresh_function_app(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> ModuleType:
    """Import function_app as the host does at indexing, with these app settings."""
    for name in (
        *TRIGGER_SETTINGS,
        *AZURE_MARKERS,
        "AzureWebJobsStorage",
        "DATAVERSE_ENVIRONMENT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("function_app", None)
    return importlib.import_module("function_app")


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    yield fresh_function_app(monkeypatch, TRIGGER_SETTINGS)
    sys.modules.pop("function_app", None)


_indexed: dict[int, dict[str, Any]] = {}


def functions_by_name(module: ModuleType) -> dict[str, Any]:
    """The host indexes an app once; a second get_functions() on it raises, so keep the index
    per imported module."""
    key = id(module.app)
    if key not in _indexed:
        _indexed[key] = {
            function.get_function_name(): function for function in module.app.get_functions()
        }
    return _indexed[key]


# --- indexing ---------------------------------------------------------------------------------


def test_indexing_lists_the_three_triggers_with_the_host_binding_json(
    app_module: ModuleType,
) -> None:
    functions = functions_by_name(app_module)
    assert set(functions) == {
        "dataverse_queue",
        "dataverse_topic",
        "dataverse_event_hub",
        "dataverse_housekeeping",
        "dataverse_health",
    }

    (queue,) = json.loads(functions["dataverse_queue"].get_function_json())["bindings"]
    assert queue == {
        "direction": "IN",
        "type": "serviceBusTrigger",
        "name": "message",
        "connection": "ServiceBusConnection",
        "queueName": "%DATAVERSE_QUEUE_NAME%",
        "autoCompleteMessages": False,
    }
    (topic,) = json.loads(functions["dataverse_topic"].get_function_json())["bindings"]
    assert topic["topicName"] == "%DATAVERSE_TOPIC_NAME%"
    assert topic["subscriptionName"] == "%DATAVERSE_SUBSCRIPTION_NAME%"
    assert topic["autoCompleteMessages"] is False
    assert topic["connection"] == "ServiceBusConnection"

    event_hub_function = functions["dataverse_event_hub"]
    (hub,) = json.loads(event_hub_function.get_function_json())["bindings"]
    assert hub == {
        "direction": "IN",
        "type": "eventHubTrigger",
        "name": "events",
        "connection": "EventHubConnection",
        "eventHubName": "%DATAVERSE_EVENT_HUB_NAME%",
        "cardinality": "MANY",
        "consumerGroup": "%DATAVERSE_EVENT_HUB_CONSUMER_GROUP%",
        "dataType": "BINARY",
    }
    assert event_hub_function.get_settings_dict("retry_policy") == {
        "setting_name": "retry_policy",
        "strategy": "exponential_backoff",
        "max_retry_count": "-1",
        "minimum_interval": "00:00:05",
        "maximum_interval": "00:05:00",
    }
    assert functions["dataverse_queue"].get_settings_dict("retry_policy") is None
    (timer,) = json.loads(functions["dataverse_housekeeping"].get_function_json())["bindings"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%HOUSEKEEPING_SCHEDULE%"


async def test_housekeeping_purges_expired_claims(app_module: ModuleType, runtime: Runtime) -> None:
    store = runtime.dispatcher.idempotency
    assert isinstance(store, InMemoryIdempotencyStore)
    store.retention_seconds = -1  # everything completed is already past retention
    await store.complete(await store.claim("op|step|handler"))
    await trigger(app_module, "dataverse_housekeeping")(None)
    assert (await store.claim("op|step|handler")).state.name == "ACQUIRED"


def test_triggers_without_their_settings_are_not_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = fresh_function_app(monkeypatch, {"DATAVERSE_QUEUE_NAME": "only-a-queue"})
    try:
        assert set(functions_by_name(module)) == {"dataverse_queue", "dataverse_housekeeping"}
    finally:
        sys.modules.pop("function_app", None)


def test_an_empty_allow_list_stops_indexing_in_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {
        **TRIGGER_SETTINGS,
        "ALLOWED_ORGANIZATIONS": "",
        "WEBSITE_INSTANCE_ID": "x",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    with pytest.raises(Exception, match="ALLOWED_ORGANIZATIONS"):
        fresh_function_app(monkeypatch, settings)
    sys.modules.pop("function_app", None)


# --- Service Bus --------------------------------------------------------------------------------


@pytest.fixture
def emulator() -> DataverseEmulator:
    return DataverseEmulator()


@pytest.fixture
async def dataverse(emulator: DataverseEmulator) -> AsyncIterator[DataverseClient]:
    async with emulated_client(emulator, time=FakeTime(), budget=20) as client:
        yield client


APP_USER = "aad00000-0000-4000-8000-00000000a990"  # no fixture's initiator


@pytest.fixture
def runtime(
    app_module: ModuleType, dataverse: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """The app's runtime, with the emulator behind its client and an in-memory poison store:
    function_app.runtime is the app's one seam for what it talks to."""
    test_runtime = build(
        Settings(
            allowed_organizations=frozenset({ORGANIZATION_ID, "contoso.crm.dynamics.com"}),
            app_user_object_id=APP_USER,
        ),
        dataverse=dataverse,
        poison=InMemoryPoisonStore(),
    )
    monkeypatch.setattr(app_module, "runtime", test_runtime)
    return test_runtime


def trigger(app_module: ModuleType, name: str) -> Any:
    return functions_by_name(app_module)[name].get_user_function()


async def test_a_create_runs_the_handlers_and_completes(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    account_id = UUID("acc00000-0000-4000-8000-000000000001")
    await runtime.dispatcher.dataverse.upsert("accounts", account_id, {"name": "Northwind Traders"})
    writes_before = len(emulator.writes())
    message = sdk_service_bus_message(context_bytes("account-create.json"), properties=claims())
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == ["complete"]
    assert actions.calls[0][1] is message
    (task,) = emulator.rows("tasks")
    assert UUID(task["activityid"]) == welcome_task_id(account_id)
    assert task["subject"] == "Welcome Northwind Traders"
    assert task["_regardingobjectid_value"] == str(account_id)
    assert [write.tag for write in emulator.writes()[writes_before:]] == [
        runtime.settings.write_tag
    ]


async def test_an_unknown_organization_is_dead_lettered(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    tree = orjson.loads(context_bytes("account-create.json"))
    tree.update(OrganizationId=str(uuid4()), OrganizationName="fabrikam")
    message = sdk_service_bus_message(
        orjson.dumps(tree), properties=claims("fabrikam.crm.dynamics.com")
    )
    actions = RecordingActions()
    await trigger(app_module, "dataverse_topic")(message, actions)
    assert actions.settlements == ["deadletter"]
    details = actions.calls[0][2]
    assert details["reason"] == "UnknownOrganization"
    assert "fabrikam" in details["description"]
    assert emulator.writes() == []


async def test_our_own_write_coming_back_is_completed_without_running_handlers(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    tree = orjson.loads(context_bytes("contact-update.json"))
    tree["SharedVariables"] = [{"key": "tag", "value": runtime.settings.write_tag}]
    tree["InitiatingUserAzureActiveDirectoryObjectId"] = APP_USER
    message = sdk_service_bus_message(orjson.dumps(tree), properties=claims())
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == ["complete"]
    assert emulator.writes() == []
    assert runtime.dispatcher.stats.outcomes == {"Skipped": 1}


async def test_a_person_s_change_carrying_our_tag_still_reaches_the_handlers(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    # Anyone can set `?tag=` on a Web API call: the tag alone hid the change from every handler.
    account_id = UUID("acc00000-0000-4000-8000-000000000001")
    await runtime.dispatcher.dataverse.upsert("accounts", account_id, {"name": "Northwind Traders"})
    tree = orjson.loads(context_bytes("account-create.json"))
    tree["SharedVariables"] = [{"key": "tag", "value": runtime.settings.write_tag}]
    message = sdk_service_bus_message(orjson.dumps(tree), properties=claims())
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == ["complete"]
    assert runtime.dispatcher.stats.outcomes == {"Completed": 1}
    assert runtime.dispatcher.stats.handler_runs >= 1


async def test_a_throttled_write_is_left_locked_for_a_later_redelivery(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    # Abandoning made the message visible at once: 20 of 20 throttled messages were
    # dead-lettered in 0.16 s. Left locked, each comes back when its lock expires (5 minutes).
    emulator.inject(429, count=100, retry_after=15)
    message = sdk_service_bus_message(context_bytes("account-create.json"), properties=claims())
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == []
    assert emulator.rows("tasks") == []


async def test_a_disabled_app_user_waits_in_the_queue_then_dead_letters_as_unauthorized(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    # A 401 dead-lettered at once (not retryable): a disabled application user would have
    # dead-lettered the whole queue within seconds.
    emulator.refuse_every_token = True
    last = runtime.settings.max_delivery_count
    body = context_bytes("account-create.json")
    function = trigger(app_module, "dataverse_queue")
    for delivery in range(1, last):
        actions = RecordingActions()
        message = sdk_service_bus_message(body, properties=claims(), delivery_count=delivery)
        await function(message, actions)
        assert actions.settlements == [], f"delivery {delivery} was settled"
    actions = RecordingActions()
    message = sdk_service_bus_message(body, properties=claims(), delivery_count=last)
    await function(message, actions)
    [(name, _, details)] = actions.calls
    assert (name, details["reason"]) == ("deadletter", "Unauthorized")
    assert "application user" in details["description"]
    assert emulator.rows("tasks") == []


async def test_on_the_last_delivery_the_app_dead_letters_with_the_real_reason(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    emulator.inject(429, count=100, retry_after=15)
    last = runtime.settings.max_delivery_count
    message = sdk_service_bus_message(
        context_bytes("account-create.json"), properties=claims(), delivery_count=last
    )
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    [(name, _, details)] = actions.calls
    # The last reason, not a generic one: an operator reads "Throttled" and knows what to do.
    assert (name, details["reason"]) == ("deadletter", "Throttled")
    assert (
        f"retries exhausted, still failing on delivery {last} of {last}" in (details["description"])
    )


async def test_a_crashed_holders_claim_does_not_spend_the_delivery_count(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    """Finding: with a crashed instance holding the claim (a 300 s lease), every redelivery got
    Retry(InProgress) and was abandoned: dead-lettered after 22 s. Now each redelivery but the
    last is left locked, so the 10 deliveries span 10 lock durations (50 minutes)."""
    body = context_bytes("account-create.json")
    event = DataverseEvent.from_service_bus(sdk_service_bus_message(body, properties=claims()))
    context = event.context
    runtime.dispatcher.claim_wait_seconds = 0.01  # how long a delivery waits for a held claim
    for route in runtime.router.match(context):  # the crashed instance's claims, still leased
        await runtime.dispatcher.idempotency.claim(f"{event_key(event)}|{route.name}")
    for delivery in range(1, runtime.settings.max_delivery_count):
        message = sdk_service_bus_message(body, properties=claims(), delivery_count=delivery)
        actions = RecordingActions()
        await trigger(app_module, "dataverse_queue")(message, actions)
        assert actions.settlements == [], f"delivery {delivery}"


async def test_a_binary_body_from_a_default_endpoint_is_handled(
    app_module: ModuleType, runtime: Runtime, emulator: DataverseEmulator
) -> None:
    """.NET binary is the default format of a service endpoint: read natively, no re-register."""
    account_id = UUID("acc00000-0000-4000-8000-000000000001")
    await runtime.dispatcher.dataverse.upsert("accounts", account_id, {"name": "Northwind Traders"})
    message = sdk_service_bus_message(
        context_bytes("account-create.msbin1"),
        properties=claims(),
        content_type="application/msbin1",
    )
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == ["complete"]
    (task,) = emulator.rows("tasks")
    assert task["subject"] == "Welcome Northwind Traders"


async def test_a_corrupted_binary_body_is_dead_lettered_with_its_reason(
    app_module: ModuleType, runtime: Runtime
) -> None:
    message = sdk_service_bus_message(
        context_bytes("account-create.msbin1")[:300],
        properties=claims(),
        content_type="application/msbin1",
    )
    actions = RecordingActions()
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements == ["deadletter"]
    assert actions.calls[0][2]["reason"] == "InvalidBinaryXml"
    assert "the body has fewer" in actions.calls[0][2]["description"]


async def test_a_failed_settlement_fails_the_invocation(
    app_module: ModuleType, runtime: Runtime
) -> None:
    message = sdk_service_bus_message(context_bytes("contact-delete.json"), properties=claims())
    actions = RecordingActions(fail_with=RuntimeError("the host's settlement channel is gone"))
    with pytest.raises(SettlementFailed, match="redelivered"):
        await trigger(app_module, "dataverse_queue")(message, actions)
    # The redelivery is recognised: the handlers are not run twice.
    runs = runtime.dispatcher.stats.handler_runs
    actions.fail_with = None
    await trigger(app_module, "dataverse_queue")(message, actions)
    assert actions.settlements[-1] == "complete"
    assert runtime.dispatcher.stats.handler_runs == runs


async def test_the_classic_binding_falls_back_to_raising(
    runtime: Runtime, emulator: DataverseEmulator
) -> None:
    from tests.host_shapes import classic_service_bus_message

    ok = classic_service_bus_message(context_bytes("contact-delete.json"), properties=claims())
    assert (await handle_message(runtime.dispatcher, ok, None)).__class__.__name__ == "Completed"
    emulator.inject(503, count=100, retry_after=30)
    throttled = classic_service_bus_message(
        context_bytes("account-create.json"), properties=claims()
    )
    with pytest.raises(RedeliveryRequested, match="DataverseUnavailable"):
        await handle_message(runtime.dispatcher, throttled, None)


# --- Event Hubs ---------------------------------------------------------------------------------


def record_body(row: int, sequence: int) -> bytes:
    """An account Update for row number `row`, its `sequence`-th change."""
    tree = orjson.loads(context_bytes("account-update-truncated.json"))
    tree["PrimaryEntityId"] = str(UUID(int=row + 1))
    tree["OperationId"] = str(UUID(int=1000 * (row + 1) + sequence))
    tree["InputParameters"] = [
        {
            "key": "Target",
            "value": {
                "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Attributes": [{"key": "sequence", "value": sequence}],
                "Id": str(UUID(int=row + 1)),
                "LogicalName": "account",
            },
        }
    ]
    return orjson.dumps(tree)


def retry_context(count: int, maximum: int = -1) -> SimpleNamespace:
    return SimpleNamespace(
        retry_context=SimpleNamespace(retry_count=count, max_retry_count=maximum)
    )


class RowRecorder:
    """A handler recording, per row, the order and overlap of its runs."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.order: dict[str, list[int]] = {}
        self.running = 0
        self.most_running = 0
        self.fail: set[tuple[str, int]] = set()

    async def __call__(self, context: Any, dataverse: Any) -> None:
        row = str(context.primary_entity_id)
        sequence = context.target["sequence"]
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        if (row, sequence) in self.fail:
            raise TransientError("try again")
        self.order.setdefault(row, []).append(sequence)


def event_hub_runtime(recorder: RowRecorder, dataverse: DataverseClient) -> Runtime:
    router = Router()

    async def record(context: Any, dataverse: Any) -> None:
        await recorder(context, dataverse)

    router.on(entity="account", message="Update")(record)
    # Without the per-event properties an event has no claim and is refused as MissingClaims:
    # passing proves they reach the dispatcher.
    settings = Settings(
        allowed_organizations=frozenset({ORGANIZATION_ID, "contoso.crm.dynamics.com"})
    )
    return Runtime(settings, router, Dispatcher(router, dataverse, settings), InMemoryPoisonStore())


async def test_an_event_hub_batch_parks_its_poison_event_and_completes_the_rest(
    app_module: ModuleType, dataverse: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RowRecorder(delay=0)
    runtime = event_hub_runtime(recorder, dataverse)
    monkeypatch.setattr(app_module, "runtime", runtime)
    bodies = [record_body(0, 1), b"\x00\x01 not a context", record_body(1, 1)]
    events = event_hub_events(bodies, properties=[claims()] * 3, partition="7")
    await trigger(app_module, "dataverse_event_hub")(events, retry_context(0))
    assert recorder.order == {str(UUID(int=1)): [1], str(UUID(int=2)): [1]}
    poison = runtime.poison
    assert isinstance(poison, InMemoryPoisonStore)
    (name,) = await poison.list()
    parked = await poison.get(name)
    assert isinstance(parked, ParkedEvent)
    assert parked.body == bodies[1]  # the exact bytes
    assert parked.reason == "NotAnExecutionContext"
    assert parked.partition == "7"
    assert parked.properties == claims()
    assert name == "eventhub/7/101@413696.json"
    assert ParkedEvent.from_json(parked.to_json()) == parked


async def test_order_within_a_row_is_kept_while_rows_run_in_parallel(
    app_module: ModuleType, dataverse: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RowRecorder(delay=0.02)
    monkeypatch.setattr(app_module, "runtime", event_hub_runtime(recorder, dataverse))
    bodies = [record_body(row, sequence) for sequence in range(1, 6) for row in range(10)]
    events = event_hub_events(bodies, properties=[claims()] * len(bodies))
    await trigger(app_module, "dataverse_event_hub")(events, retry_context(0))
    assert recorder.order == {str(UUID(int=row + 1)): [1, 2, 3, 4, 5] for row in range(10)}
    # One per row at a time, all rows at once; what that buys in time is benchmarks.dispatch's.
    assert recorder.most_running == 10


async def test_a_failing_row_is_retried_then_parked_on_the_last_attempt(
    app_module: ModuleType, dataverse: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RowRecorder(delay=0)
    runtime = event_hub_runtime(recorder, dataverse)
    monkeypatch.setattr(app_module, "runtime", runtime)
    failing_row = str(UUID(int=1))
    recorder.fail.add((failing_row, 2))
    bodies = [record_body(row, sequence) for sequence in (1, 2, 3) for row in (0, 1)]
    events = event_hub_events(bodies, properties=[claims()] * len(bodies))
    function = trigger(app_module, "dataverse_event_hub")
    with pytest.raises(BatchNeedsRetry, match="2 of 6"):
        await function(events, retry_context(0))
    assert recorder.order == {failing_row: [1], str(UUID(int=2)): [1, 2, 3]}
    await function(events, retry_context(PARK_AFTER_RETRIES))  # park: the checkpoint may advance
    assert recorder.order[failing_row] == [1]  # sequence 3 never ran before sequence 2
    assert recorder.order[str(UUID(int=2))] == [1, 2, 3]  # not rerun: duplicates
    poison = runtime.poison
    parked = [await poison.get(name) for name in await poison.list()]
    assert sorted(orjson.loads(p.body)["OperationId"] for p in parked) == sorted(
        [str(UUID(int=1002)), str(UUID(int=1003))]
    )
    # The failing event keeps its reason; the one behind it says why it was held back.
    assert sorted(p.reason for p in parked) == ["HeldBackForOrder", "TransientError"]
    assert all(p.description.startswith("retries exhausted") for p in parked)


async def test_the_health_timer_checks_the_environment_file(
    app_module: ModuleType, dataverse: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.registration import environment, sas_key
    from tools.endpoints import reconcile

    registered = environment()
    async with emulated_client(registered) as client:
        await reconcile(client, load_environment("dev"), apply=True, sas_key=sas_key)
        settings = Settings(
            allowed_organizations=frozenset({ORGANIZATION_ID}), environment_name="dev"
        )
        monkeypatch.setattr(app_module, "runtime", build(settings, dataverse=client))
        step = registered.rows("sdkmessageprocessingsteps")[0]
        await client.update(
            "sdkmessageprocessingsteps", step["sdkmessageprocessingstepid"], {"statecode": 1}
        )
        await trigger(app_module, "dataverse_health")(None)
        results = await app_module.runtime.check_health()
    assert [(r.check, r.target) for r in results if not r.ok] == [("step-enabled", step["name"])]
