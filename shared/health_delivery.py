"""The health checks that look past configuration at delivery itself: posting jobs left
waiting, flows and their connections, the queue's age, credentials about to expire, and the
canary (shared/canary.py).

    waiting-jobs     posting jobs of a step suspended (Waiting) for longer than 5 minutes:
                     Dataverse retries a post after a network error, so nothing has Failed yet
    flow-on          each flow of the environment file is turned on (workflow statecode 1)
    connection       each flow's connection reference has a connection
    queue-age        the oldest active message is younger than 15 minutes (a consumer stopped)
    secret-expiry    the Key Vault copy of each send key expires in more than 30 days
    canary           each path delivered the last canary, or has been silent for N minutes

What Azure alone can answer (the queue's oldest message, a secret's expiry) comes through
`DeliveryProbes`: the Azure SDKs in production, the local broker and a clock in drills.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shared.canary import TAG_PREFIX, CanaryStore, Mark, new_nonce, report
from shared.dataverse import DataverseClient, RequestOptions
from shared.dataverse.addressing import literal
from shared.errors import DataverseError
from shared.flow_definition import ACTIVATED, MESSAGES_OF, MODERN_FLOW
from shared.health import CheckResult
from shared.registration import EndpointSpec, EnvironmentSpec

WAITING_GRACE = timedelta(minutes=5)
QUEUE_AGE_LIMIT = timedelta(minutes=15)
EXPIRY_WARNING = timedelta(days=30)
SUSPENDED = 1  # asyncoperation.statecode: Suspended (statuscode 10, Waiting)


@dataclass(frozen=True)
class QueueState:
    active: int
    oldest_enqueued: datetime | None


class DeliveryProbes(Protocol):
    async def queue(self, endpoint: EndpointSpec) -> QueueState | None: ...

    async def secret_expires(self, endpoint: EndpointSpec) -> datetime | None: ...


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def waiting_jobs(
    client: DataverseClient, name: str, step_id: str, now: datetime
) -> CheckResult:
    waiting = [
        job
        async for job in client.query(
            "asyncoperations",
            filter=f"statecode eq {SUSPENDED} and _owningextensionid_value eq {step_id}",
            select=["createdon", "message"],
            orderby="createdon asc",
        )
    ]
    if not waiting:
        return CheckResult("waiting-jobs", name, True, "none waiting")
    oldest = datetime.fromisoformat(str(waiting[0]["createdon"]).replace("Z", "+00:00"))
    age = now - oldest
    ok = age < WAITING_GRACE
    detail = (
        f"{len(waiting)} posting jobs waiting, the oldest for {age.total_seconds() / 60:.0f} "
        "min: Dataverse retries them; check that the namespace is reachable"
    )
    if waiting[0].get("message"):
        detail += f" (latest: {waiting[0]['message']})"
    return CheckResult("waiting-jobs", name, ok, detail)


async def _flow_trigger(
    client: DataverseClient, name: str, table: str, messages: Sequence[str]
) -> CheckResult:
    """A flow's Dataverse trigger lives as a `callbackregistration` row, made when the flow is
    turned on; a flow that reads as on but lost it (an import, a clean-up) is never triggered."""
    found = [
        row
        async for row in client.query(
            "callbackregistrations",
            filter=f"entityname eq {literal(table)}",
            select=["message", "name"],
        )
    ]
    covered = any(
        set(messages) <= MESSAGES_OF.get(int(row.get("message") or 0), set()) for row in found
    )
    detail = (
        f"its trigger is registered for {table}"
        if covered
        else f"no callback registration for its {'/'.join(messages)} of {table}: the flow is "
        "never triggered (turn it off and on again to register its trigger)"
    )
    return CheckResult("flow-trigger", name, covered, detail)


async def flow_checks(client: DataverseClient, spec: EnvironmentSpec) -> list[CheckResult]:
    results = []
    for flow in spec.flows:
        found = await client.first(
            "workflows",
            filter=f"name eq {literal(flow.name)} and category eq {MODERN_FLOW}",
            select=["workflowid", "statecode"],
        )
        if found is None:
            results.append(CheckResult("flow-on", flow.name, False, "no such cloud flow"))
        else:
            on = found.get("statecode") == ACTIVATED
            detail = "on" if on else "turned off: it publishes nothing"
            results.append(CheckResult("flow-on", flow.name, on, detail))
            if on and flow.table:
                results.append(await _flow_trigger(client, flow.name, flow.table, flow.messages))
        if flow.connection_reference:
            reference = await client.first(
                "connectionreferences",
                filter=(f"connectionreferencelogicalname eq {literal(flow.connection_reference)}"),
                select=["connectionid", "statecode"],
            )
            connected = bool(reference and reference.get("connectionid"))
            active = bool(reference) and reference.get("statecode", 0) == 0  # type: ignore[union-attr]
            results.append(
                CheckResult(
                    "connection",
                    flow.connection_reference,
                    connected and active,
                    "connected"
                    if connected and active
                    else "no connection: the flow cannot send (fix the connection reference)",
                )
            )
    return results


async def probe_checks(
    spec: EnvironmentSpec, probes: DeliveryProbes, now: datetime
) -> list[CheckResult]:
    results = []
    for endpoint in spec.endpoints:
        state = await probes.queue(endpoint)
        if state is not None:
            age = now - state.oldest_enqueued if state.oldest_enqueued else timedelta(0)
            ok = age < QUEUE_AGE_LIMIT
            detail = f"{state.active} active, the oldest {age.total_seconds() / 60:.0f} min old"
            if not ok:
                detail += ": the app is not consuming (is the function app running?)"
            results.append(CheckResult("queue-age", endpoint.path, ok, detail))
        expires = await probes.secret_expires(endpoint)
        if expires is not None:
            left = expires - now
            ok = left > EXPIRY_WARNING
            detail = f"the send key's Key Vault copy expires in {left.days} days"
            if not ok:
                detail += ": redeploy (it renews the secret) or rotate the key"
            results.append(CheckResult("secret-expiry", endpoint.name, ok, detail))
    return results


async def canary_round(
    client: DataverseClient,
    spec: EnvironmentSpec,
    store: CanaryStore,
    now: datetime,
    failed: Sequence[CheckResult],
) -> list[CheckResult]:
    """Report on the canary sent last time, then send the next one."""
    if spec.canary is None:
        return []
    moment = now.timestamp()
    results = report(spec, await store.last_sent(), await store.arrivals(), moment, failed)
    nonce = new_nonce()
    try:
        await client.update(
            spec.canary.entity_set,
            spec.canary.row_id,
            {spec.canary.column: f"canary {nonce} at {_iso(now)}"},
            options=RequestOptions(tag=TAG_PREFIX + nonce),
        )
    except DataverseError as error:
        results.append(
            CheckResult("canary", spec.canary.row_id, False, f"could not write: {error.message}")
        )
        return results
    await store.sent(Mark(nonce, moment))
    return results
