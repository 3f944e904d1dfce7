"""The soak's events (benchmarks.soak): contact Updates with rising row versions, and the
order a broker delivers them in, with duplicates and reordering."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from uuid import UUID, uuid4

import orjson

from .soak_model import ORGANIZATION

ROOT = Path(__file__).resolve().parents[1]
STEP = "57e90000-0000-4000-8000-00000000beef"


def make_events(count: int, rows: int) -> list[tuple[str, int, bytes]]:
    """(row, sequence, body) in causal order: every row's changes in sequence."""
    template = orjson.loads(
        (ROOT / "tests" / "fixtures" / "contexts" / "contact-update.json").read_bytes()
    )
    template["OwningExtension"]["Id"] = STEP
    template["OrganizationId"] = ORGANIZATION
    events = []
    for index in range(count):
        row, sequence = index % rows, index // rows + 1
        row_id = str(UUID(int=row + 1))
        tree = dict(template)
        tree["PrimaryEntityId"] = row_id
        tree["OperationId"] = str(uuid4())
        tree["OperationCreatedOn"] = f"/Date({1735689600000 + sequence * 1000})/"
        tree["InputParameters"] = [
            {
                "key": "Target",
                "value": {
                    "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                    "Attributes": [{"key": "contoso_sequence", "value": sequence}],
                    "Id": row_id,
                    "LogicalName": "contact",
                    "RowVersion": str(1000 + sequence),
                },
            }
        ]
        tree["PostEntityImages"] = []
        tree["PreEntityImages"] = []
        events.append((row_id, sequence, orjson.dumps(tree)))
    return events


def deliveries(
    events: list[tuple[str, int, bytes]], rng: random.Random, duplicates: float, reordered: float
) -> list[int]:
    """Indexes into `events` in delivery order."""
    order = list(range(len(events)))
    by_row: dict[str, list[int]] = {}
    for index in order:
        by_row.setdefault(events[index][0], []).append(index)
    position = {index: place for place, index in enumerate(order)}
    for indexes in by_row.values():
        for earlier, later in itertools.pairwise(indexes):
            if rng.random() < reordered:  # the later change overtakes the earlier one
                a, b = position[earlier], position[later]
                order[a], order[b] = order[b], order[a]
                position[earlier], position[later] = b, a
    for index in list(order):
        if rng.random() < duplicates:
            order.insert(rng.randrange(position[index] + 1, len(order) + 1), index)
            position = {value: place for place, value in enumerate(order)}
    return order
