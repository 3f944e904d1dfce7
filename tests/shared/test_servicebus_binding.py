"""The host's ModelBindingData layout for Service Bus, read as the host writes it."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace
from typing import Any

import azurefunctions.extensions.base as base
import azurefunctions.extensions.bindings.servicebus as sdk
import pytest
from azurefunctions.extensions.bindings.servicebus import ServiceBusConverter
from azurefunctions.extensions.bindings.servicebus import utils as extension_utils

from shared import observability, servicebus_binding
from tests.host.amqp import binding_content


def converted(content: bytes) -> Any:
    data = SimpleNamespace(
        version="1.0",
        source="AzureServiceBusReceivedMessage",
        content_type="application/octet-stream",
        content=content,
    )
    return ServiceBusConverter.decode(
        base.Datum(data, "model_binding_data"),
        trigger_metadata={},
        pytype=sdk.ServiceBusReceivedMessage,
    )


def host_content(token: uuid.UUID, delivery_count: int = 4) -> bytes:
    return binding_content(
        b'{"MessageName":"Create"}',
        lock_token=token,
        properties={"a": "b"},
        delivery_count=delivery_count,
        sequence_number=77,
        message_id="m-1",
    )


def test_the_extension_alone_loses_the_header_of_the_hosts_layout() -> None:
    # Why this module exists: if this starts failing, the extension reads the header itself
    # and servicebus_binding can go.
    token = uuid.uuid4()
    message = extension_utils.get_decoded_message(host_content(token))
    assert message.header is None or message.header.delivery_count is None


def test_installed_the_converter_reads_every_fact_the_host_sent() -> None:
    assert servicebus_binding.install()
    token = uuid.uuid4()
    message = converted(host_content(token, delivery_count=4))
    assert message.lock_token == token
    assert message.delivery_count == 4
    assert message.sequence_number == 77
    assert message.message_id == "m-1"
    assert message.time_to_live is not None
    assert b"".join(message.body) == b'{"MessageName":"Create"}'


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01" * 16, uuid.uuid4().bytes_le + b"x-opt-lock-token" + b"\x00\x53"],
)
def test_content_not_in_the_hosts_layout_is_refused(content: bytes) -> None:
    with pytest.raises(ValueError, match="binding content"):
        servicebus_binding.decode_binding_content(content)


def test_uamqp_says_nothing_at_info_once_the_app_has_set_up_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The extension's own decoding of the host's bytes makes uamqp's C layer log nine INFO
    # lines per message, which the worker would forward to the host's logs.
    observability.install()
    caplog.set_level(logging.INFO)
    logging.getLogger("uamqp").setLevel(logging.NOTSET)  # caplog resets; install() again
    observability.install()
    extension_utils.get_decoded_message(host_content(uuid.uuid4()))
    assert not [record for record in caplog.records if record.name.startswith("uamqp")]
