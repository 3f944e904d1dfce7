"""Event Hubs: a batch of events, processed in parallel across rows and in order within a row.

Events about the same row (same table and id) run one after another in the order of the
stream; different rows run concurrently. When an event must be retried, the later events of its
row wait too (their order matters), while other rows carry on. The trigger's retry policy then
re-runs the batch; completed events are recognised as duplicates. Dead letters, and events still
failing on the last retry, go to the poison store, because the host checkpoints past a failed
batch and an event not parked would be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.dispatch import DeadLetter, Dispatcher, Outcome, Retry
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.poison import PoisonStore

logger = logging.getLogger("dataverse.eventhub")

DEFAULT_PARALLEL_ROWS = 16


class BatchNeedsRetry(RuntimeError):
    """Raised so the trigger's retry policy runs the batch again."""


@dataclass
class BatchReport:
    outcomes: list[Outcome | None] = field(default_factory=list)  # None: held back for order
    parked: list[str] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome is None or isinstance(outcome, Retry))


def is_final_attempt(retry_context: object) -> bool:
    """The worker passes a RetryContext on every invocation, counting from 0; without a retry
    policy both counts are 0, so the first attempt is the last."""
    count = int(getattr(retry_context, "retry_count", 0) or 0)
    return count >= int(getattr(retry_context, "max_retry_count", 0) or 0)


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
) -> BatchReport:
    report = BatchReport(outcomes=[None] * len(events))
    rows: dict[tuple[str, str], list[int]] = {}
    for index, event in enumerate(events):
        rows.setdefault(row_key(event, index), []).append(index)
    slots = asyncio.Semaphore(parallel_rows)

    async def run_row(indexes: list[int]) -> None:
        async with slots:
            for index in indexes:
                outcome = await dispatcher.process(events[index])
                report.outcomes[index] = outcome
                if isinstance(outcome, Retry):
                    return  # later events of this row keep their order: not before this one

    await asyncio.gather(*(run_row(indexes) for indexes in rows.values()))

    for index, outcome in enumerate(report.outcomes):
        if isinstance(outcome, DeadLetter):
            report.parked.append(
                await poison.park(events[index], outcome.reason, outcome.description, partition)
            )
        elif final_attempt and (outcome is None or isinstance(outcome, Retry)):
            reason = outcome.reason if outcome is not None else "HeldBackForOrder"
            detail = outcome.detail if outcome is not None else "an earlier event of its row failed"
            report.parked.append(
                await poison.park(
                    events[index], "RetriesExhausted", f"{reason}: {detail}", partition
                )
            )
    if report.retries and not final_attempt:
        raise BatchNeedsRetry(f"{report.retries} of {len(events)} events need another attempt")
    if report.parked:
        logger.error("parked %d events in the poison store", len(report.parked))
    return report
