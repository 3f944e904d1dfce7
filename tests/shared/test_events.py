"""DataverseEvent built from the transports' own message classes."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func

from shared.events import DataverseEvent, normalise_properties
from tests.conftest import context_bytes
from tests.host_shapes import classic_service_bus_message

CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"


def dataverse_properties() -> dict[str, object]:
    return {
        CLAIMS + "Organization": "contoso.crm.dynamics.com",
        CLAIMS + "User": "5e000000-0000-4000-8000-000000000001",
        CLAIMS + "InitiatingUser": "5e000000-0000-4000-8000-000000000001",
        CLAIMS + "EntityLogicalName": "account",
        CLAIMS + "RequestName": "Create",
        CLAIMS + "InitiatingUserAgent": "Mozilla/5.0",
    }


def test_from_a_classic_service_bus_message() -> None:
    body = context_bytes("account-create.json")
    message = classic_service_bus_message(
        body,
        properties=dataverse_properties(),
        message_id="m-1",
        delivery_count=2,
        sequence_number=17,
    )
    event = DataverseEvent.from_service_bus(message)
    assert event.enqueued_time == datetime(2025, 1, 1, tzinfo=UTC)
    assert event.body == body
    assert (event.message_id, event.delivery_count, event.position) == ("m-1", 2, "17")
    assert event.transport == "servicebus"
    assert event.claims.organization == "contoso.crm.dynamics.com"
    assert event.claims.request_name == "Create"
    assert event.claims.entity_logical_name == "account"
    assert event.claims.initiating_user_agent == "Mozilla/5.0"
    assert event.claims.present
    assert not event.truncated
    assert event.context.message_name == "Create"


def test_claim_keys_in_any_case_and_as_bytes() -> None:
    raw = {
        key.lower().encode(): str(value).encode() for key, value in dataverse_properties().items()
    }
    raw[b"MESSAGEMAXSIZEEXCEEDED"] = b"True"
    event = DataverseEvent(body=b"{}", properties=normalise_properties(raw))
    assert event.claims.user == "5e000000-0000-4000-8000-000000000001"
    assert event.truncated
    assert event.get_property("MessageMaxSizeExceeded") == "True"


def test_without_claims_nothing_is_present() -> None:
    event = DataverseEvent(body=b"{}")
    assert not event.claims.present
    assert event.claims.organization is None


def test_from_an_event_hub_event() -> None:
    body = context_bytes("contact-update.json")
    event_hub_event = func.EventHubEvent(
        body=body,
        enqueued_time=datetime(2025, 1, 2, tzinfo=UTC),
        partition_key="p",
        sequence_number=5,
        offset="500",
    )
    event = DataverseEvent.from_event_hub(event_hub_event, dataverse_properties())
    assert event.transport == "eventhub"
    assert event.position == "5@500"
    assert event.partition_key == "p"
    assert event.enqueued_time == datetime(2025, 1, 2, tzinfo=UTC)
    assert event.claims.organization == "contoso.crm.dynamics.com"
    assert event.context.message_name == "Update"  # no content type: sniffed as JSON


def test_sdk_style_body_sections_are_joined() -> None:
    class Received:
        def __init__(self) -> None:
            self.body = iter([b'{"a":', b"1}"])
            self.content_type = b"application/json"
            self.application_properties = {b"k": b"v"}

    event = DataverseEvent.from_service_bus(Received())
    assert event.body == b'{"a":1}'
    assert event.content_type == "application/json"
    assert event.properties == {"k": "v"}


def test_attribute_values_are_logged_only_when_allowed(caplog) -> None:
    import logging

    from shared import observability

    with caplog.at_level(logging.INFO, logger="dataverse"):
        observability.allow_values(False)
        observability.log_values("target", {"name": "Northwind", "revenue": 1})
        observability.allow_values(True)
        observability.log_values("target", {"name": "Northwind"})
        observability.allow_values(False)
    hidden, shown = (record.getMessage() for record in caplog.records)
    assert hidden == "target: columns ['name', 'revenue'] (values hidden)"
    assert "Northwind" in shown
