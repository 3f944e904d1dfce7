"""Service Bus: from a received message to an outcome to its settlement.

With the SDK-type binding (`auto_complete_messages=False`) the app settles explicitly:
complete on Completed/Skipped, abandon on Retry (the broker redelivers, and dead-letters after
MaxDeliveryCount), dead-letter with reason and description on DeadLetter. If settling fails, the
invocation fails too: the message stays locked until its lock expires and is then redelivered,
and the idempotency claims make the rerun harmless. Nothing is lost.

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
    try:
        if isinstance(outcome, Completed | Skipped):
            actions.complete(message)
        elif isinstance(outcome, Retry):
            actions.abandon(message)
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


def _settle_through_host(outcome: Outcome) -> None:
    if isinstance(outcome, Retry):
        raise RedeliveryRequested(f"{outcome.reason}: {outcome.detail}")
    if isinstance(outcome, DeadLetter):
        # The classic binding cannot dead-letter with a reason: redeliver until the broker's
        # MaxDeliveryCount moves it to the dead-letter queue.
        raise RedeliveryRequested(f"{outcome.reason}: {outcome.description}")
