"""Event Hubs: a batch of events, processed in parallel across rows and in order within a row.

Events about the same row (same table and id) run one after another in the order of the
stream; different rows run concurrently. When an event must be retried, the later events of its
row wait too (their order matters), while other rows carry on. The trigger's retry policy then
re-runs the batch; completed events are recognised as duplicates.

The host checkpoints past a batch once its retries are over, so an event that is neither applied
nor parked would be lost. Hence: every event's failure is its own outcome (nothing escapes the
batch); dead letters, and events still failing once `PARK_AFTER_RETRIES` retries have passed, go
to the poison store, each write retried; and the trigger's retry policy is unbounded
(`max_retry_count=-1`), so while an event can be neither applied nor parked the invocation
fails, its partition and sequence number are logged, and the checkpoint stays before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from shared.dispatch import DeadLetter, Dispatcher, Outcome, Retry
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.poison import PoisonStore

logger = logging.getLogger("dataverse.eventhub")

DEFAULT_PARALLEL_ROWS = 16

# The trigger's retry policy (function_app.py): exponential from 5 s, at most 5 minutes a wait,
# never giving up. Events are parked on the retry numbered PARK_AFTER_RETRIES, after
# 5+10+20+40+80+160+300 = 615 s of waiting: longer than a crashed holder's 300 s claim lease,
# so an event held by a dead instance is applied, not parked as InProgress.
RETRY_MINIMUM_SECONDS = 5
RETRY_MAXIMUM_SECONDS = 300
PARK_AFTER_RETRIES = 7
PARK_ATTEMPTS = 3  # writes to the poison store per event and invocation


class BatchNeedsRetry(RuntimeError):
    """Raised so the trigger's retry policy runs the batch again."""


@dataclass
class BatchReport:
    outcomes: list[Outcome | None] = field(default_factory=list)  # None: held back for order
    parked: list[str] = field(default_factory=list)
    unparked: list[int] = field(default_factory=list)  # indexes the poison store refused

    @property
    def retries(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome is None or isinstance(outcome, Retry))


def is_final_attempt(retry_context: object, park_after: int = PARK_AFTER_RETRIES) -> bool:
    """Whether this invocation parks what still fails. The worker passes a RetryContext on every
    invocation, counting retries from 0. The policy never gives up (max_retry_count -1), so
    the app decides; where a policy does end sooner (max_retry_count >= 0), its last retry."""
    count = int(getattr(retry_context, "retry_count", 0) or 0)
    limit = int(getattr(retry_context, "max_retry_count", 0) or 0)
    return count >= park_after or 0 <= limit <= count


def retry_waits(retries: int) -> list[int]:
    """The waits (seconds) of the trigger's exponential policy before each of `retries`."""
    return [
        min(RETRY_MAXIMUM_SECONDS, RETRY_MINIMUM_SECONDS * 2**attempt) for attempt in range(retries)
    ]


def row_key(event: DataverseEvent, index: int) -> tuple[str, str]:
    try:
        context = event.context
        return context.primary_entity_name, str(context.primary_entity_id)
    except InvalidMessage:
        return "unreadable", str(index)  # dead-lettered on its own


async def process_batch(
    dispatcher: Dispatcher,
    events: Sequence[DataverseEvent],
    poison: PoisonStore,
    *,
    partition: str | None,
    final_attempt: bool,
    parallel_rows: int = DEFAULT_PARALLEL_ROWS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> BatchReport:
    report = BatchReport(outcomes=[None] * len(events))
    rows: dict[tuple[str, str], list[int]] = {}
    for index, event in enumerate(events):
        rows.setdefault(row_key(event, index), []).append(index)
    slots = asyncio.Semaphore(parallel_rows)

    async def run_row(indexes: list[int]) -> None:
        async with slots:
            for index in indexes:
                outcome = await _process(dispatcher, events[index])
                report.outcomes[index] = outcome
                if isinstance(outcome, Retry):
                    return  # later events of this row keep their order: not before this one

    await asyncio.gather(*(run_row(indexes) for indexes in rows.values()))

    for index, outcome in enumerate(report.outcomes):
        parking: tuple[str, str] | None = None
        if isinstance(outcome, DeadLetter):
            parking = (outcome.reason, outcome.description)
        elif final_attempt and (outcome is None or isinstance(outcome, Retry)):
            reason = outcome.reason if outcome is not None else "HeldBackForOrder"
            detail = outcome.detail if outcome is not None else "an earlier event of its row failed"
            parking = (reason, f"retries exhausted: {detail}")
        if parking is None:
            continue
        name = await _park(poison, events[index], *parking, partition=partition, sleep=sleep)
        if name is None:
            report.unparked.append(index)
        else:
            report.parked.append(name)
    if report.parked:
        logger.error("parked %d events in the poison store", len(report.parked))
    if report.unparked:
        for index in report.unparked:
            logger.critical(
                "event at partition %s, sequence %s can be neither applied nor parked: the "
                "batch fails so the checkpoint stays before it",
                partition,
                events[index].position,
            )
        raise BatchNeedsRetry(
            f"{len(report.unparked)} of {len(events)} events could not be parked in the "
            "poison store (check the app's role on its storage account)"
        )
    if report.retries and not final_attempt:
        raise BatchNeedsRetry(f"{report.retries} of {len(events)} events need another attempt")
    return report


async def _process(dispatcher: Dispatcher, event: DataverseEvent) -> Outcome:
    """The dispatcher's outcome; an error it let through (a store that failed) is a Retry of
    this event alone, never an exception that takes the rest of the batch with it."""
    try:
        return await dispatcher.process(event)
    except Exception as error:
        logger.exception("processing the event at %s failed", event.position)
        return Retry("Unexpected", f"{type(error).__name__}: {error}")


async def _park(
    poison: PoisonStore,
    event: DataverseEvent,
    reason: str,
    description: str,
    *,
    partition: str | None,
    sleep: Callable[[float], Awaitable[None]],
) -> str | None:
    """The parked event's name, or None when every attempt failed."""
    for attempt in range(PARK_ATTEMPTS):
        try:
            return await poison.park(event, reason, description, partition)
        except Exception as error:
            logger.error(
                "parking the event at %s failed (attempt %d of %d): %s",
                event.position,
                attempt + 1,
                PARK_ATTEMPTS,
                error,
            )
            if attempt + 1 < PARK_ATTEMPTS:
                await sleep(0.5 * 2**attempt)
    return None
