"""The Azure Functions app: trigger functions that turn transport messages into events and
outcomes into settlement. Every decision is made in shared.dispatch.

Which triggers exist depends on the app settings: DATAVERSE_QUEUE_NAME (Service Bus queue),
DATAVERSE_TOPIC_NAME + DATAVERSE_SUBSCRIPTION_NAME (topic subscription), DATAVERSE_EVENT_HUB_NAME
(Event Hub); a trigger without its setting is not registered.
"""

from __future__ import annotations

import logging
import typing

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from shared import observability, servicebus_binding
from shared.app import build
from shared.eventhub import is_final_attempt, process_batch
from shared.servicebus import handle_message

observability.install()
servicebus_binding.install()  # read the delivery count where the host puts it
runtime = build()
settings = runtime.settings
app = func.FunctionApp()
logger = logging.getLogger("dataverse.app")

if settings.queue_name:

    @app.function_name("dataverse_queue")
    @app.service_bus_queue_trigger(
        arg_name="message",
        queue_name="%DATAVERSE_QUEUE_NAME%",
        connection="ServiceBusConnection",
        auto_complete_messages=False,
    )
    async def dataverse_queue(
        message: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await handle_message(runtime.dispatcher, message, message_actions)


if settings.topic_name and settings.subscription_name:

    @app.function_name("dataverse_topic")
    @app.service_bus_topic_trigger(
        arg_name="message",
        topic_name="%DATAVERSE_TOPIC_NAME%",
        subscription_name="%DATAVERSE_SUBSCRIPTION_NAME%",
        connection="ServiceBusConnection",
        auto_complete_messages=False,
    )
    async def dataverse_topic(
        message: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await handle_message(runtime.dispatcher, message, message_actions)


if settings.event_hub_name:

    @app.function_name("dataverse_event_hub")
    # Never give up: the host checkpoints past a batch once its retries end, so the app parks
    # what still fails itself (shared.eventhub.PARK_AFTER_RETRIES) and fails the batch while an
    # event can be neither applied nor parked.
    @app.retry(
        strategy="exponential_backoff",
        max_retry_count="-1",
        minimum_interval="00:00:05",
        maximum_interval="00:05:00",
    )
    @app.event_hub_message_trigger(
        arg_name="events",
        event_hub_name="%DATAVERSE_EVENT_HUB_NAME%",
        connection="EventHubConnection",
        cardinality="many",
        consumer_group="%DATAVERSE_EVENT_HUB_CONSUMER_GROUP%",
        data_type="binary",  # bodies as sent, never re-encoded as text
    )
    async def dataverse_event_hub(
        # typing.List, not list[...]: the Functions worker's parameter check rejects PEP 585
        # generics and then refuses to index the whole app (tests/host proves it).
        events: typing.List[func.EventHubEvent],  # noqa: UP006
        context: func.Context,
    ) -> None:
        batch, partition = runtime.event_hub_batch(events)
        await process_batch(
            runtime.dispatcher,
            batch,
            runtime.poison,
            partition=partition,
            final_attempt=is_final_attempt(context.retry_context),
        )


@app.function_name("dataverse_housekeeping")
@app.timer_trigger(arg_name="timer", schedule="%HOUSEKEEPING_SCHEDULE%", run_on_startup=False)
async def dataverse_housekeeping(timer: func.TimerRequest) -> None:
    """Delete what the idempotency store keeps past its retention: claims 7 days (completed, or
    stranded in progress by a crashed instance), a row's ordering record 15 days after its
    last change."""
    purged = await runtime.dispatcher.idempotency.purge_expired()
    logger.info("purged %d expired idempotency records", purged)


if settings.environment_name:

    @app.function_name("dataverse_health")
    @app.timer_trigger(arg_name="timer", schedule="%HEALTH_SCHEDULE%", run_on_startup=False)
    async def dataverse_health(timer: func.TimerRequest) -> None:
        """Check the sending side (endpoints, keys, steps, failed posts) of DATAVERSE_ENVIRONMENT
        and log one structured line per check; failures also count as a metric."""
        await runtime.check_health()
