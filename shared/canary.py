"""The canary: a change the health run makes on purpose, which every publishing path must
deliver back to the app.

Configuration can look right while nothing arrives (a posting job left waiting, an internal
error before any post). So each health run writes one canary change to the row the
environment file names (`[canary] table, row, column`), tagged `canary:<nonce>`; every
endpoint has a canary step on that column (tools.endpoints registers it beside the others).
The dispatcher recognises a canary event before any guard or handler (the tag, and the app's
own application user as initiator, so nobody else can fake one), records its arrival per path
(the posting step) in the app's storage, shared by all instances, and completes it.

A cloud flow that publishes the canary's table is a path too (`flow: <its name>`): its row
carries the canary column's value, which is how its canary is recognised (flow_canary_nonce).

The next health run reads the arrivals: per path, "delivered in N s" or "silent for N min",
naming the likely cause from the other checks' failures. Cost: one Dataverse request per run
(the write), so 96 a day at the default 15-minute schedule, and one event per path per run.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shared import metrics

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.registration import EnvironmentSpec

TAG_PREFIX = "canary:"
_SAFE = re.compile(r"[^A-Za-z0-9 .:_-]")


def new_nonce() -> str:
    return secrets.token_hex(8)


def canary_nonce(shared_variables: object) -> str | None:
    """The nonce of a canary tag in SharedVariables (read undecoded: a plain string)."""
    if not isinstance(shared_variables, list):
        return None
    for item in shared_variables:
        if isinstance(item, dict) and item.get("key") == "tag":
            value = item.get("value")
            if isinstance(value, str) and value.startswith(TAG_PREFIX):
                return value[len(TAG_PREFIX) :][:64]
    return None


@dataclass(frozen=True)
class Mark:
    nonce: str
    at: float  # epoch seconds


class CanaryStore(Protocol):
    async def sent(self, mark: Mark) -> None: ...

    async def last_sent(self) -> Mark | None: ...

    async def arrived(self, path: str, mark: Mark) -> None: ...

    async def arrivals(self) -> dict[str, Mark]: ...


class InMemoryCanaryStore:
    """One process's memory: for tests, the demo and the drills."""

    def __init__(self) -> None:
        self._sent: Mark | None = None
        self._arrivals: dict[str, Mark] = {}

    async def sent(self, mark: Mark) -> None:
        self._sent = mark

    async def last_sent(self) -> Mark | None:
        return self._sent

    async def arrived(self, path: str, mark: Mark) -> None:
        self._arrivals[path] = mark

    async def arrivals(self) -> dict[str, Mark]:
        return dict(self._arrivals)


class TableCanaryStore:
    """The canary's marks in the app's Table storage (partition `canary`), beside the
    idempotency claims: the health timer and every instance's dispatcher see the same."""

    PARTITION = "canary"

    def __init__(self, table: TableClient) -> None:
        from shared.storage import CreateOnce

        self._table = table
        self._ensure_table = CreateOnce(table.create_table)

    async def _put(self, row: str, mark: Mark, path: str = "") -> None:
        await self._ensure_table()
        await self._table.upsert_entity(
            {
                "PartitionKey": self.PARTITION,
                "RowKey": row,
                "Nonce": mark.nonce,
                "At": mark.at,
                "Path": path,
            }
        )

    async def sent(self, mark: Mark) -> None:
        await self._put("sent", mark)

    async def last_sent(self) -> Mark | None:
        from azure.core.exceptions import ResourceNotFoundError

        await self._ensure_table()
        try:
            row = await self._table.get_entity(self.PARTITION, "sent")
        except ResourceNotFoundError:
            return None
        return Mark(str(row["Nonce"]), float(row["At"]))

    async def arrived(self, path: str, mark: Mark) -> None:
        await self._put("path:" + _SAFE.sub("_", path)[:200], mark, path)

    async def arrivals(self) -> dict[str, Mark]:
        await self._ensure_table()
        found = {}
        async for row in self._table.query_entities(f"PartitionKey eq '{self.PARTITION}'"):
            if str(row["RowKey"]).startswith("path:"):
                found[str(row["Path"])] = Mark(str(row["Nonce"]), float(row["At"]))
        return found


def canary_paths(spec: EnvironmentSpec) -> list[str]:
    """The paths a canary must come through: each endpoint's canary step."""
    return [
        step.name(endpoint.name)
        for endpoint in spec.endpoints
        for step in endpoint.steps
        if step.canary
    ] + [
        FLOW_PATH + flow.name
        for flow in spec.flows
        if spec.canary is not None and flow.table == spec.canary.table and "Update" in flow.messages
    ]


FLOW_PATH = "flow: "
# The value the health run writes (health_delivery.canary_round): "canary <nonce> at <time>".
_WRITTEN = re.compile(r"^canary ([0-9a-f]{16}) at ")


def flow_canary_nonce(attributes: Mapping[str, Any]) -> str | None:
    """The nonce of a canary change a cloud flow published: its row carries the canary
    column's value, as no tag or user id comes with it. Anyone who can write the canary row can
    write such a value, but an arrival counts only with the nonce of the last canary sent."""
    for value in attributes.values():
        if isinstance(value, str) and (found := _WRITTEN.match(value)):
            return found.group(1)
    return None


def report(
    spec: EnvironmentSpec,
    sent: Mark | None,
    arrivals: Mapping[str, Mark],
    now: float,
    failed_checks: Iterable[Any],
) -> list[Any]:
    """One `canary` result per path for the canary sent last time."""
    from shared.health import CheckResult

    causes = sorted({result.check for result in failed_checks})
    results = []
    for path in canary_paths(spec):
        if sent is None:
            results.append(CheckResult("canary", path, True, "first run: canary sent"))
            continue
        arrival = arrivals.get(path)
        if arrival is not None and arrival.nonce == sent.nonce:
            delay = max(0.0, arrival.at - sent.at)
            metrics.canary_delivered(path, delay)
            results.append(CheckResult("canary", path, True, f"delivered in {delay:.0f} s"))
            continue
        minutes = (now - sent.at) / 60
        likely = f"; likely: {', '.join(causes)}" if causes else "; no other check failed"
        results.append(CheckResult("canary", path, False, f"silent for {minutes:.0f} min{likely}"))
    return results
