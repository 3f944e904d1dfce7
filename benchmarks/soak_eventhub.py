"""The soak's Event Hubs phase (benchmarks.soak, fault `poison-failures`): batches as the host
delivers them, poison events, transient handler failures and a poison store that refuses
writes, on the final attempt too."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from shared.dataverse import DataverseClient
from shared.dispatch import Dispatcher
from shared.errors import PermanentError, TransientError
from shared.eventhub import BatchNeedsRetry, is_final_attempt, process_batch
from shared.events import DataverseEvent
from shared.routing import Router
from shared.settings import Settings

from .soak_events import make_events
from .soak_model import CLAIMS, ORGANIZATION, FlakyPoisonStore, RetryContext, ScaledTime


@dataclass
class EventHubResult:
    events: int
    poison: int
    applied: int
    parked: Counter[str]
    premature_parked: int
    lost: int
    invocations: int
    park_failures: int


async def eventhub_soak(
    count: int, *, seed: int, time_scale: float, batch_size: int = 100
) -> EventHubResult:
    """Batches as the host delivers them: the same batch again after each failed invocation
    (retry_count rising), the checkpoint past it only when an invocation succeeds."""
    rng = random.Random(seed + 1)
    clock = ScaledTime(time_scale)
    applied: set[str] = set()
    poison_ids: set[str] = set()
    router = Router()

    @router.on(entity="contact", message="Update")
    async def apply(context: Any, dataverse: Any) -> None:
        event = str(context.operation_id)
        if event in poison_ids:
            raise PermanentError("this event can never be applied")
        if rng.random() < 0.10:
            raise TransientError("a passing failure")
        applied.add(event)

    events = make_events(count, max(10, count // 20))
    bodies = []
    for number, (_, _, body) in enumerate(events):
        if rng.random() < 0.01:
            poison_ids.add(str(orjson.loads(body)["OperationId"]))
        bodies.append((number, body))
    poison = FlakyPoisonStore(rng, 0.5)
    dispatcher = Dispatcher(
        router,
        DataverseClient("https://contoso.crm.dynamics.com"),  # never called: nothing is written
        Settings(allowed_organizations=frozenset({ORGANIZATION})),
        sleep=clock.sleep,
    )
    invocations = 0
    for first in range(0, len(bodies), batch_size):
        batch = [
            DataverseEvent(
                body=body,
                content_type="application/json",
                message_id=f"e{number}",
                transport="eventhub",
                position=f"{number}@{number * 1000}",
                properties={CLAIMS + "Organization": ORGANIZATION},
            )
            for number, body in bodies[first : first + batch_size]
        ]
        retry = 0
        while True:
            invocations += 1
            try:
                await process_batch(
                    dispatcher,
                    batch,
                    poison,
                    partition="0",
                    final_attempt=is_final_attempt(RetryContext(retry)),
                    sleep=clock.sleep,
                )
                break  # the host checkpoints past the batch
            except BatchNeedsRetry:
                retry += 1
                if retry > 100:
                    break  # stuck: what is neither applied nor parked counts as lost
    records = list(poison.parked.values())
    parked_ids = {str(orjson.loads(record.body)["OperationId"]) for record in records}
    every = {str(orjson.loads(body)["OperationId"]) for _, body in bodies}
    return EventHubResult(
        events=len(bodies),
        poison=len(poison_ids),
        applied=len(applied),
        parked=Counter(record.reason for record in records),
        premature_parked=len(parked_ids - poison_ids),
        lost=len(every - applied - parked_ids) + len(poison_ids - parked_ids),
        invocations=invocations,
        park_failures=poison.failures,
    )
