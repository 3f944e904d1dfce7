"""Service Bus: from a received message to an outcome to its settlement.

With the SDK-type binding (`auto_complete_messages=False`) the app settles explicitly:
complete on Completed/Skipped, dead-letter with reason and description on DeadLetter.

A Retry means "later", not "now": the message is left locked, not abandoned, so the broker
redelivers it only when its lock expires (LockDuration: 5 minutes in infra/main.bicep). That
outlasts a crashed holder's claim (a 5-minute lease) and any Retry-After the client waits for,
where abandoning made the message visible at once and spent MaxDeliveryCount in seconds. On the
last delivery the broker allows (`SERVICE_BUS_MAX_DELIVERY_COUNT`, equal to the entity's
MaxDeliveryCount) the app dead-letters a Retry itself, with the last reason (`Unauthorized`,
`Throttled`, `InProgress`, ...) and its detail rather than the broker's generic
MaxDeliveryCountExceeded. If settling fails, the invocation fails
too: the message is redelivered when its lock expires, and the idempotency claims make the
rerun harmless. Nothing is lost.

Without settlement support (the classic binding, `actions=None`) the same outcomes map to the
host's own behaviour: return to complete, raise to have the message redelivered, up to
MaxDeliveryCount, after which the broker dead-letters it (with a generic reason).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from shared.dispatch import Completed, DeadLetter, Dispatcher, Outcome, Retry, Skipped
from shared.events import DataverseEvent

logger = logging.getLogger("dataverse.servicebus")


class MessageActions(Protocol):
    """What `azurefunctions.extensions.bindings.servicebus.ServiceBusMessageActions` offers."""

    def complete(self, message: Any) -> None: ...

    def abandon(self, message: Any) -> None: ...

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None: ...


class SettlementFailed(RuntimeError):
    """Settling failed; the invocation fails so the message is redelivered after its lock."""


class RedeliveryRequested(RuntimeError):
    """Classic binding: raised so the host abandons the message for a redelivery."""


async def handle_message(
    dispatcher: Dispatcher, message: Any, actions: MessageActions | None
) -> Outcome:
    event = DataverseEvent.from_service_bus(message)
    outcome = await dispatcher.process(event)
    if actions is None:
        _settle_through_host(outcome)
        return outcome
    if isinstance(outcome, Retry) and _last_delivery(
        event.delivery_count, dispatcher.settings.max_delivery_count
    ):
        outcome = DeadLetter(
            outcome.reason,
            f"retries exhausted, still failing on delivery {event.delivery_count} of "
            f"{dispatcher.settings.max_delivery_count}: {outcome.detail}",
        )
    try:
        if isinstance(outcome, Completed | Skipped):
            actions.complete(message)
        elif isinstance(outcome, Retry):
            pass  # left locked: redelivered when the lock expires (see the module docstring)
        else:
            actions.deadletter(
                message,
                deadletter_reason=outcome.reason,
                deadletter_error_description=outcome.description,
            )
    except Exception as error:
        logger.error(
            "settling message %s as %s failed: %s", event.message_id, type(outcome).__name__, error
        )
        raise SettlementFailed(
            f"could not settle message {event.message_id} ({type(outcome).__name__}); it will "
            "be redelivered when its lock expires"
        ) from error
    logger.info(
        "message %s, delivery %s: %s",
        event.message_id,
        event.delivery_count,
        type(outcome).__name__,
    )
    return outcome


def _last_delivery(delivery_count: int | None, max_delivery_count: int) -> bool:
    # Without a delivery count (a host that does not send it) the broker's own limit applies.
    return delivery_count is not None and delivery_count >= max_delivery_count


def _settle_through_host(outcome: Outcome) -> None:
    if isinstance(outcome, Retry):
        raise RedeliveryRequested(f"{outcome.reason}: {outcome.detail}")
    if isinstance(outcome, DeadLetter):
        # The classic binding cannot dead-letter with a reason: redeliver until the broker's
        # MaxDeliveryCount moves it to the dead-letter queue.
        raise RedeliveryRequested(f"{outcome.reason}: {outcome.description}")
