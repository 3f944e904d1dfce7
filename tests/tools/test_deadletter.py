"""Resubmission keeps what the sender wrote, byte for byte (the SDK's own message classes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from shared.events import DataverseEvent
from shared.poison import InMemoryPoisonStore
from tests.conftest import context_bytes
from tests.events import claims
from tests.host_shapes import sdk_service_bus_message
from tools.deadletter import RESUBMIT_PROPERTY, body_bytes, event_of, resubmission_of, resubmit


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[ServiceBusMessage] = []

    async def send_messages(self, message: Any, **options: Any) -> None:
        self.sent.append(message)


class RecordingReceiver:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        self.log.append(f"complete {message.message_id}")


BICEP = Path(__file__).resolve().parents[2] / "infra" / "main.bicep"


def dead_letter(body: bytes, content_type: str, **extra: str) -> ServiceBusReceivedMessage:
    return sdk_service_bus_message(
        body,
        properties={**claims(EntityLogicalName="account"), **extra},
        content_type=content_type,
        message_id="m-9",
    )


async def test_a_binary_body_and_its_properties_are_resubmitted_unchanged() -> None:
    body = context_bytes("account-create.msbin1")  # .NET binary: re-encoding would corrupt it
    original = dead_letter(body, "application/msbin1")
    again = resubmission_of(original)
    assert b"".join(again.body) == body
    assert body_bytes(original) == body
    assert again.content_type == "application/msbin1"
    assert again.message_id == "m-9"
    assert again.application_properties == claims(EntityLogicalName="account")
    # What arrives after the resubmission reads exactly as the original did.
    assert (
        DataverseEvent.from_service_bus(again).properties
        == DataverseEvent.from_service_bus(original).properties
    )


async def test_resubmit_sends_first_then_removes_the_dead_letter() -> None:
    log: list[str] = []
    sender = RecordingSender()
    receiver = RecordingReceiver(log)
    messages = [dead_letter(context_bytes("contact-update.json"), "application/json")]
    assert await resubmit(messages, sender, receiver) == 1
    (sent,) = sender.sent
    assert b"".join(sent.body) == context_bytes("contact-update.json")
    assert log == ["complete m-9"]


async def test_a_subscription_s_dead_letter_is_resubmitted_to_that_subscription_only() -> None:
    # It was sent to the topic as it was, so every subscription received it again.
    sender = RecordingSender()
    messages = [dead_letter(context_bytes("contact-update.json"), "application/json")]
    await resubmit(messages, sender, RecordingReceiver([]), "consumers")
    (sent,) = sender.sent
    assert (sent.application_properties or {})[RESUBMIT_PROPERTY] == "consumers"
    # The subscription rule in infra/main.bicep reads that property: the other subscriptions,
    # whose rules name themselves, skip it; Dataverse's own posts carry none, so all take them.
    bicep = BICEP.read_text()
    rule = re.search(r"sqlExpression: '(.*)'\n", bicep)
    assert rule is not None
    assert rule.group(1) == (
        f"user.{RESUBMIT_PROPERTY} IS NULL OR "
        f"user.{RESUBMIT_PROPERTY} = \\'${{subscriptionName}}\\'"
    )
    # A queue's resubmission is addressed to nobody, even when the original was.
    again = resubmission_of(dead_letter(b"{}", "application/json", ResubmitTo="old"))
    assert RESUBMIT_PROPERTY not in (again.application_properties or {})


async def test_parked_events_become_event_hub_events_unchanged() -> None:
    store = InMemoryPoisonStore()
    event = DataverseEvent(
        body=context_bytes("account-create.msbin1"),
        content_type="application/msbin1",
        properties=claims(),
        transport="eventhub",
        position="5@500",
    )
    name = await store.park(event, "InvalidBinaryXml", "truncated", "1")
    data = event_of(await store.get(name))
    assert data.body_as_str(encoding="latin-1").encode("latin-1") == context_bytes(
        "account-create.msbin1"
    )
    assert data.content_type == "application/msbin1"
    assert data.properties == claims()
