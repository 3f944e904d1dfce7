"""Dead letters and parked events: look at them, send them back, or delete them.

    python -m tools.deadletter list     --namespace NS (--queue Q | --topic T --subscription S)
    python -m tools.deadletter show     ... --sequence N
    python -m tools.deadletter resubmit ... (--sequence N | --all)
    python -m tools.deadletter purge    ... (--sequence N | --all) --yes
    python -m tools.deadletter parked list|show|resubmit|purge [NAME]
                               [--event-hub-namespace NS --event-hub H]

Service Bus dead-letter queues are read with your Azure identity (Azure Service Bus Data Owner,
or Receiver plus Sender). Parked Event Hubs events come from the app's poison store
(AzureWebJobsStorage or AzureWebJobsStorage__accountName in the environment).

A resubmitted message carries the original body bytes, content type, message id, correlation
id, subject and application properties, unchanged: re-encoding the body corrupts the .NET
binary format, and the app's idempotency makes a resubmission of a partly handled event run
only the handlers that had not completed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from azure.eventhub import EventData
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage

from shared.events import normalise_properties
from shared.poison import ParkedEvent, PoisonStore


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    """The AMQP data sections joined: the body exactly as the sender wrote it."""
    return b"".join(bytes(section) for section in message.body)


def _properties(raw: Mapping[Any, Any] | None) -> dict[str | bytes, Any]:
    # The SDK hands AMQP strings back as bytes; Dataverse's claims are strings, and sending
    # bytes would turn them into binary properties, which Service Bus filters do not match.
    properties: dict[str | bytes, Any] = {}
    properties.update(normalise_properties(raw))
    return properties


# A topic has no way to send to one subscription: a resubmitted dead letter goes to the topic
# with this property naming its subscription, and each subscription's rule (infra/main.bicep)
# takes messages without it, or with its own name only. Without it, every subscription would
# receive the message again.
RESUBMIT_PROPERTY = "ResubmitTo"


def resubmission_of(
    message: ServiceBusReceivedMessage, subscription: str | None = None
) -> ServiceBusMessage:
    """The message as it was posted; for a topic, addressed to `subscription` alone."""
    properties = _properties(message.application_properties)
    properties.pop(RESUBMIT_PROPERTY, None)
    if subscription:
        properties[RESUBMIT_PROPERTY] = subscription
    return ServiceBusMessage(
        body_bytes(message),
        application_properties=properties,
        content_type=_text(message.content_type),
        message_id=_text(message.message_id),
        correlation_id=_text(message.correlation_id),
        subject=_text(message.subject),
    )


def event_of(parked: ParkedEvent) -> EventData:
    event = EventData(parked.body)
    if parked.content_type is not None:
        event.content_type = parked.content_type
    properties: dict[str | bytes, Any] = {}
    properties.update(parked.properties)
    event.properties = properties
    return event


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Sender(Protocol):
    async def send_messages(self, message: Any, **options: Any) -> None: ...


class Settler(Protocol):
    async def complete_message(self, message: ServiceBusReceivedMessage) -> None: ...


async def resubmit(
    messages: Sequence[ServiceBusReceivedMessage],
    sender: Sender,
    receiver: Settler,
    subscription: str | None = None,
) -> int:
    """Send each message back to its entity (a topic's: to `subscription` alone), then remove
    it from the dead-letter queue (in that order: a crash in between leaves a duplicate, which
    the app skips, never a loss)."""
    for message in messages:
        await sender.send_messages(resubmission_of(message, subscription))
        await receiver.complete_message(message)
    return len(messages)


def describe(message: ServiceBusReceivedMessage) -> str:
    return (
        f"#{message.sequence_number} {message.message_id} delivered {message.delivery_count}x "
        f"reason={message.dead_letter_reason!r} "
        f"description={message.dead_letter_error_description!r}"
    )


async def _service_bus(args: argparse.Namespace) -> int:
    from azure.identity.aio import DefaultAzureCredential
    from azure.servicebus import ServiceBusSubQueue
    from azure.servicebus.aio import ServiceBusClient

    async with (
        DefaultAzureCredential() as credential,
        ServiceBusClient(f"{args.namespace}.servicebus.windows.net", credential) as client,
    ):
        if args.queue:
            receiver = client.get_queue_receiver(
                args.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            )
            sender = client.get_queue_sender(args.queue)
        else:
            receiver = client.get_subscription_receiver(
                args.topic, args.subscription, sub_queue=ServiceBusSubQueue.DEAD_LETTER
            )
            sender = client.get_topic_sender(args.topic)
        async with receiver, sender:
            if args.command in ("list", "show"):
                peeked = await receiver.peek_messages(max_message_count=args.max)
                for message in peeked:
                    if args.command == "list":
                        print(describe(message))
                    elif message.sequence_number == args.sequence:
                        print(describe(message))
                        print(f"content type: {message.content_type}")
                        print(f"properties: {_properties(message.application_properties)}")
                        print(body_bytes(message)[:4000].decode("utf-8", errors="replace"))
                return 0
            chosen = []
            for message in await receiver.receive_messages(
                max_message_count=args.max, max_wait_time=5
            ):
                if args.all or message.sequence_number == args.sequence:
                    chosen.append(message)
                else:
                    await receiver.abandon_message(message)
            if args.command == "resubmit":
                count = await resubmit(chosen, sender, receiver, args.subscription)
                print(f"resubmitted {count} messages")
            elif args.yes:
                for message in chosen:
                    await receiver.complete_message(message)
                print(f"purged {len(chosen)} messages")
            else:
                print("purge deletes messages for good: add --yes", file=sys.stderr)
                return 2
    return 0


async def _parked(args: argparse.Namespace, store: PoisonStore) -> int:
    names = [args.name] if args.name else await store.list()
    if args.command == "list":
        for name in names:
            parked = await store.get(name)
            print(f"{name} reason={parked.reason!r} parked_at={parked.parked_at}")
        return 0
    if args.command == "show":
        parked = await store.get(args.name)
        print(f"{parked.name} {parked.reason}: {parked.description}")
        print(f"content type: {parked.content_type}; properties: {parked.properties}")
        print(parked.body[:4000].decode("utf-8", errors="replace"))
        return 0
    if args.command == "purge" and not args.yes:
        print("purge deletes parked events for good: add --yes", file=sys.stderr)
        return 2
    if args.command == "resubmit":
        from azure.eventhub.aio import EventHubProducerClient
        from azure.identity.aio import DefaultAzureCredential

        async with (
            DefaultAzureCredential() as credential,
            EventHubProducerClient(
                f"{args.event_hub_namespace}.servicebus.windows.net", args.event_hub, credential
            ) as producer,
        ):
            for name in names:
                await producer.send_batch([event_of(await store.get(name))])
                await store.remove(name)
        print(f"resubmitted {len(names)} parked events")
        return 0
    for name in names:
        await store.remove(name)
    print(f"purged {len(names)} parked events")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.deadletter",
        usage=(
            "\n  python -m tools.deadletter list|show|resubmit|purge --namespace NS "
            "(--queue Q | --topic T --subscription S) [--sequence N | --all] [--max N] [--yes]"
            "\n  python -m tools.deadletter parked list|show|resubmit|purge [NAME] "
            "[--event-hub-namespace NS --event-hub H]"
        ),
        description="Dead letters (Service Bus) and parked events (Event Hubs): look at them, "
        "send them back, or delete them.",
    )
    parser.add_argument(
        "command",
        choices=["list", "show", "resubmit", "purge", "parked"],
        help="what to do with dead letters; `parked` works on parked Event Hubs events",
    )
    parser.add_argument(
        "parked_command",
        nargs="?",
        choices=["list", "show", "resubmit", "purge"],
        metavar="PARKED_COMMAND",
        help="after `parked`: list, show, resubmit or purge",
    )
    parser.add_argument("name", nargs="?", help="a parked event's name (from `parked list`)")
    parser.add_argument(
        "--namespace", metavar="NS", help="Service Bus namespace name (without the domain)"
    )
    parser.add_argument("--queue", metavar="Q", help="the queue whose dead letters to use")
    parser.add_argument(
        "--topic", metavar="T", help="the topic (with --subscription) whose dead letters to use"
    )
    parser.add_argument("--subscription", metavar="S", help="the topic's subscription")
    parser.add_argument(
        "--sequence", type=int, metavar="N", help="one dead letter, by its sequence number"
    )
    parser.add_argument("--all", action="store_true", help="every dead letter (up to --max)")
    parser.add_argument(
        "--max", type=int, default=100, metavar="N", help="at most this many (default: 100)"
    )
    parser.add_argument("--yes", action="store_true", help="confirm a purge: it deletes")
    parser.add_argument(
        "--event-hub-namespace",
        metavar="NS",
        help="with `parked resubmit`: the Event Hubs namespace to send back to",
    )
    parser.add_argument(
        "--event-hub", metavar="H", help="with `parked resubmit`: the event hub to send back to"
    )
    args = parser.parse_args(argv)
    if args.command == "parked":
        from shared.app import make_poison_store
        from shared.settings import Settings

        args.command = args.parked_command or "list"
        return asyncio.run(_parked(args, make_poison_store(Settings.from_environment())))
    if not args.namespace or not (args.queue or (args.topic and args.subscription)):
        parser.error("give --namespace and --queue, or --topic and --subscription")
    if args.command in ("resubmit", "purge") and not (args.all or args.sequence is not None):
        parser.error("give --sequence N or --all")
    return asyncio.run(_service_bus(args))


if __name__ == "__main__":
    sys.exit(main())
