"""function_app.py on the real Functions Python runtime (azure-functions-runtime on Python
3.13), driven over the host's gRPC protocol by tests/host/host.py with host-exact invocation
data (tests/host/wire.py). The worker runs in its own process with the deployed requirements;
the Dataverse emulator serves its write-backs on a loopback port.

Not covered here: the .NET host itself (its scaling, lock renewal, checkpointing, retry timing)
and the AMQP links to a real broker; what the host does with an invocation's result is taken
from its documentation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from handlers.welcome_task import welcome_task_id
from shared.eventhub import PARK_AFTER_RETRIES
from tests.conftest import context_bytes
from tests.events import ORGANIZATION_ID, claims
from tests.host.host import HostDouble, Settlement, protos
from tests.host.wire import event_hub_invocation, service_bus_invocation, timer_invocation
from tests.loopback import serve
from tools.emulator import DataverseEmulator

ACCOUNT_ID = orjson.loads(context_bytes("account-create.json"))["PrimaryEntityId"]
FUNCTIONS = {
    "dataverse_queue",
    "dataverse_topic",
    "dataverse_event_hub",
    "dataverse_housekeeping",
    "dataverse_health",
}


@pytest.fixture(scope="module")
def emulator() -> DataverseEmulator:
    return DataverseEmulator()


@pytest.fixture(scope="module")
def dataverse_url(emulator: DataverseEmulator) -> Iterator[str]:
    with serve(emulator) as url:
        yield url


@pytest.fixture(scope="module")
def host(worker_python: str, script_root: Path, dataverse_url: str) -> Iterator[HostDouble]:
    double = HostDouble(
        script_root,
        worker_python,
        environment={
            "DATAVERSE_QUEUE_NAME": "dataverse-events",
            "DATAVERSE_TOPIC_NAME": "dataverse",
            "DATAVERSE_SUBSCRIPTION_NAME": "consumers",
            "DATAVERSE_EVENT_HUB_NAME": "dataverse-hub",
            "DATAVERSE_EVENT_HUB_CONSUMER_GROUP": "$Default",
            "HOUSEKEEPING_SCHEDULE": "0 30 3 * * *",
            "DATAVERSE_ENVIRONMENT": "dev",
            "HEALTH_SCHEDULE": "0 */15 * * * *",
            "DATAVERSE_URL": dataverse_url,
            "DATAVERSE_CALL_BUDGET_SECONDS": "2",
            "ALLOWED_ORGANIZATIONS": ORGANIZATION_ID,
            "IDEMPOTENCY_STORE": "memory",
        },
    )
    double.start()
    try:
        init = double.init()
        assert init.result.status == protos.StatusResult.Success, init.result.exception.message
        double.metadata()
        double.load_all()
        yield double
    finally:
        double.stop()


def account_create(**changes: Any) -> bytes:
    tree = orjson.loads(context_bytes("account-create.json"))
    tree.update(changes)
    return orjson.dumps(tree)


def succeeded(response: Any) -> bool:
    return bool(response.result.status == protos.StatusResult.Success)


def deliver(
    host: HostDouble,
    function: str,
    body: bytes,
    *,
    properties: dict[str, str] | None = None,
    **message: Any,
) -> list[Settlement]:
    """One Service Bus delivery; what reached the Settlement service for its lock token."""
    inputs, metadata, token = service_bus_invocation(
        body, properties=claims() if properties is None else properties, **message
    )
    response = host.invoke(function, inputs, trigger_metadata=metadata)
    assert succeeded(response), response.result.exception.message
    return [entry for entry in host.settlements if entry.lock_token == str(token)]


def settle(host: HostDouble, function: str, body: bytes, **message: Any) -> Settlement:
    found = deliver(host, function, body, **message)
    assert len(found) == 1, host.settlements
    return found[0]


def test_the_worker_indexes_every_function_with_its_bindings(host: HostDouble) -> None:
    assert set(host.functions) == FUNCTIONS
    bindings = {name: dict(meta.bindings) for name, meta in host.functions.items()}
    assert bindings["dataverse_queue"]["message"].type == "serviceBusTrigger"
    assert bindings["dataverse_event_hub"]["events"].type == "eventHubTrigger"
    retry = host.functions["dataverse_event_hub"].retry_options
    assert retry.max_retry_count == -1  # unbounded: the app parks, the host never gives up
    # The host binds ModelBindingData (the SDK type) only where the raw binding asks for it.
    for name in ("dataverse_queue", "dataverse_topic"):
        [raw] = [orjson.loads(raw) for raw in host.functions[name].raw_bindings]
        assert raw["properties"] == {"SupportsDeferredBinding": True}
        assert raw["autoCompleteMessages"] is False


def test_a_valid_event_is_applied_and_completed(
    host: HostDouble, dataverse_url: str, emulator: DataverseEmulator
) -> None:
    httpx.patch(
        f"{dataverse_url}/api/data/v9.2/accounts({ACCOUNT_ID})",
        json={"name": "Contoso"},
        headers={"Authorization": "Bearer emulator"},
    ).raise_for_status()
    settlement = settle(host, "dataverse_queue", account_create(), message_id="valid-1")
    assert settlement.action == "complete"
    task = str(welcome_task_id(uuid.UUID(ACCOUNT_ID)))
    assert [row for row in emulator.rows("tasks") if row.get("activityid") == task]


def test_the_delivery_count_the_app_reads_is_the_one_the_host_sent(host: HostDouble) -> None:
    inputs, metadata, _ = service_bus_invocation(
        b"{}", properties=claims(), message_id="counted-1", delivery_count=7
    )
    response = host.invoke("dataverse_topic", inputs, trigger_metadata=metadata)
    assert succeeded(response)
    lines = [log.message for log in host.logs_of(response.invocation_id)]
    assert "message counted-1, delivery 7: DeadLetter" in lines, lines


def test_an_unreadable_body_is_dead_lettered_with_its_reason(host: HostDouble) -> None:
    settlement = settle(host, "dataverse_queue", b"<html>not a context</html>")
    assert settlement.action == "deadletter"
    assert settlement.reason
    assert settlement.reason != "MaxDeliveryCountExceeded"
    assert settlement.description


def test_a_foreign_organization_is_dead_lettered(host: HostDouble) -> None:
    body = account_create(
        OrganizationId="99999999-0000-4000-8000-000000000099",
        OrganizationName="fabrikam",
        OperationId=str(uuid.uuid4()),
    )
    settlement = settle(
        host, "dataverse_queue", body, properties=claims("fabrikam.crm.dynamics.com")
    )
    assert (settlement.action, settlement.reason) == ("deadletter", "UnknownOrganization")


def test_a_failing_handler_leaves_the_message_locked_until_its_last_delivery(
    host: HostDouble, emulator: DataverseEmulator
) -> None:
    emulator.inject(503, count=50, path_contains="tasks")
    try:
        body = account_create(OperationId=str(uuid.uuid4()))
        # Delivery 3: no settlement reaches the host, so the broker redelivers after the lock.
        assert (
            deliver(host, "dataverse_queue", body, message_id="failing-1", delivery_count=3) == []
        )
        settlement = settle(
            host, "dataverse_queue", body, message_id="failing-1", delivery_count=10
        )
    finally:
        emulator.clear_faults()
    # Delivery 10 (MaxDeliveryCount): the app dead-letters it itself, with the real reason.
    assert (settlement.action, settlement.reason) == ("deadletter", "DataverseUnavailable")
    assert "503" in (settlement.description or "")
    assert "delivery 10 of 10" in (settlement.description or "")


def test_an_event_hub_batch_is_applied_and_returns_success(host: HostDouble) -> None:
    bodies = [account_create(OperationId=str(uuid.uuid4())) for _ in range(3)]
    inputs, metadata = event_hub_invocation(bodies, properties=[claims()] * 3)
    response = host.invoke("dataverse_event_hub", inputs, trigger_metadata=metadata, retry=(0, -1))
    assert succeeded(response), response.result.exception.message


def test_an_event_hub_batch_that_needs_a_retry_fails_the_invocation(
    host: HostDouble, emulator: DataverseEmulator
) -> None:
    emulator.inject(503, count=50, path_contains="tasks")
    try:
        body = account_create(OperationId=str(uuid.uuid4()))
        inputs, metadata = event_hub_invocation([body], properties=[claims()], first_sequence=500)
        first = host.invoke("dataverse_event_hub", inputs, trigger_metadata=metadata, retry=(0, -1))
        last = host.invoke(
            "dataverse_event_hub", inputs, trigger_metadata=metadata, retry=(PARK_AFTER_RETRIES, -1)
        )
    finally:
        emulator.clear_faults()
    assert not succeeded(first)  # the host's retry policy runs the batch again
    assert succeeded(last)  # parked in the poison store, so the checkpoint may advance


@pytest.mark.parametrize("function", ["dataverse_housekeeping", "dataverse_health"])
def test_the_timers_run(host: HostDouble, function: str) -> None:
    response = host.invoke(function, timer_invocation())
    assert succeeded(response), response.result.exception.message


def test_no_library_floods_the_host_logs(host: HostDouble) -> None:
    inputs, metadata, _ = service_bus_invocation(
        account_create(OperationId=str(uuid.uuid4())), properties=claims()
    )
    response = host.invoke("dataverse_queue", inputs, trigger_metadata=metadata)
    categories = [log.category for log in host.logs_of(response.invocation_id)]
    assert not [name for name in categories if name.startswith("uamqp")], categories
