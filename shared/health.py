"""Is the sending side still sending? The failures of this architecture that nobody sees.

Dataverse posts through system jobs; when a step is disabled, the SAS key was rotated in Azure,
or the app user lost its role, nothing reaches the app and nothing complains. Each check here
looks at one such cause and reports it by name:

    authentication     the app user can authenticate and read (WhoAmI)
    endpoint-exists    the service endpoint is registered
    sas-key-set        it has a SAS key (issaskeyset; imports never carry one)
    endpoint-check     Dataverse can post with it (TriggerServiceEndpointCheck)
    step-enabled       every step of the environment file is registered and enabled
    failed-jobs        no system job of those steps failed since the last check
    dead-letters       the queue or subscription has no dead letters (with management rights)

and, looking at delivery itself (shared/health_delivery.py): waiting-jobs, flow-on,
connection, queue-age, secret-expiry and canary.

Each result is logged as one structured line, and failures are counted as a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from shared.dataverse import DataverseClient
from shared.dataverse.addressing import literal
from shared.errors import DataverseError
from shared.registration import EndpointSpec, EnvironmentSpec

if TYPE_CHECKING:
    from shared.canary import CanaryStore
    from shared.health_delivery import DeliveryProbes

logger = logging.getLogger("dataverse.health")

FAILED = 31  # asyncoperation.statuscode: Failed

DeadLetterCounter = Callable[[EndpointSpec], Awaitable[int]]


@dataclass(frozen=True)
class CheckResult:
    check: str
    target: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:<16} {self.target}: {self.detail}"


async def run_checks(
    client: DataverseClient,
    spec: EnvironmentSpec,
    *,
    since: datetime,
    dead_letters: DeadLetterCounter | None = None,
    canaries: CanaryStore | None = None,
    probes: DeliveryProbes | None = None,
    now: datetime | None = None,
) -> list[CheckResult]:
    from shared.health_delivery import canary_round, flow_checks, probe_checks

    now = now or datetime.now(UTC)
    results: list[CheckResult] = []
    try:
        who = await client.function("WhoAmI")
        results.append(
            CheckResult("authentication", spec.dataverse_url, True, f"user {who.get('UserId')}")
        )
    except DataverseError as error:
        detail = (
            "the app user cannot authenticate: check the managed identity, the application "
            f"user and its security role ({error})"
        )
        results.append(CheckResult("authentication", spec.dataverse_url, False, detail))
        _publish(results)
        return results  # nothing else can be read
    for endpoint in spec.endpoints:
        results.extend(await _endpoint_checks(client, endpoint, since, now))
        if dead_letters is not None and endpoint.contract in ("queue", "topic"):
            results.append(await _dead_letter_check(endpoint, dead_letters))
    results.extend(await flow_checks(client, spec))
    if probes is not None:
        results.extend(await probe_checks(spec, probes, now))
    if canaries is not None:
        failed = [result for result in results if not result.ok]
        results.extend(await canary_round(client, spec, canaries, now, failed))
    _publish(results)
    return results


async def _endpoint_checks(
    client: DataverseClient, endpoint: EndpointSpec, since: datetime, now: datetime
) -> list[CheckResult]:
    from shared.health_delivery import waiting_jobs

    results = []
    found = await client.first(
        "serviceendpoints",
        filter=f"name eq {literal(endpoint.name)}",
        select=["serviceendpointid", "issaskeyset"],
    )
    if found is None:
        results.append(
            CheckResult(
                "endpoint-exists", endpoint.name, False, "not registered: run tools.endpoints apply"
            )
        )
        return results
    endpoint_id = UUID(found["serviceendpointid"])
    results.append(CheckResult("endpoint-exists", endpoint.name, True, str(endpoint_id)))
    key_set = bool(found.get("issaskeyset"))
    results.append(
        CheckResult(
            "sas-key-set",
            endpoint.name,
            key_set,
            "set" if key_set else "no SAS key (solution imports never carry it): re-apply it",
        )
    )
    try:
        await client.action(
            "TriggerServiceEndpointCheck", bound_to=("serviceendpoints", endpoint_id)
        )
        results.append(CheckResult("endpoint-check", endpoint.name, True, "Dataverse can post"))
    except DataverseError as error:
        results.append(CheckResult("endpoint-check", endpoint.name, False, error.message))
    steps: dict[str, dict[str, Any]] = {}
    async for row in client.query(
        "sdkmessageprocessingsteps",
        filter=f"_eventhandler_value eq {endpoint_id}",
        select=["sdkmessageprocessingstepid", "name", "statecode"],
    ):
        steps[row["name"]] = row
    for spec_step in endpoint.steps:
        name = spec_step.name(endpoint.name)
        step = steps.get(name)
        if step is None:
            results.append(CheckResult("step-enabled", name, False, "not registered"))
            continue
        enabled = step.get("statecode") == 0
        results.append(
            CheckResult(
                "step-enabled",
                name,
                enabled,
                "enabled" if enabled else "disabled: nothing is posted",
            )
        )
        step_id = step["sdkmessageprocessingstepid"]
        results.append(await _failed_jobs(client, name, step_id, since))
        results.append(await waiting_jobs(client, name, step_id, now))
    return results


async def _failed_jobs(
    client: DataverseClient, name: str, step_id: str, since: datetime
) -> CheckResult:
    failures = [
        job
        async for job in client.query(
            "asyncoperations",
            filter=(
                f"statuscode eq {FAILED} and _owningextensionid_value eq {step_id} "
                f"and completedon ge {since.isoformat().replace('+00:00', 'Z')}"
            ),
            select=["friendlymessage", "message", "completedon"],
            orderby="completedon desc",
        )
    ]
    if not failures:
        return CheckResult("failed-jobs", name, True, f"none since {since.isoformat()}")
    latest = failures[0]
    reason = latest.get("friendlymessage") or latest.get("message") or "no message"
    return CheckResult(
        "failed-jobs", name, False, f"{len(failures)} failed posts; latest: {reason}"
    )


async def _dead_letter_check(endpoint: EndpointSpec, count: DeadLetterCounter) -> CheckResult:
    try:
        found = await count(endpoint)
    except Exception as error:  # management rights are optional: say why it could not look
        return CheckResult("dead-letters", endpoint.path, False, f"could not count: {error}")
    return CheckResult(
        "dead-letters",
        endpoint.path,
        found == 0,
        f"{found} dead-lettered messages" + ("" if found == 0 else ": see tools.deadletter list"),
    )


def _publish(results: list[CheckResult]) -> None:
    failures = 0
    for result in results:
        extra = {
            "health_check": result.check,
            "health_target": result.target,
            "health_ok": result.ok,
        }
        if result.ok:
            logger.info("health %s %s: %s", result.check, result.target, result.detail, extra=extra)
        else:
            failures += 1
            logger.error(
                "health %s %s: %s", result.check, result.target, result.detail, extra=extra
            )
    _record_metric(failures)


def _record_metric(failures: int) -> None:
    """`dataverse.health.failures` through OpenTelemetry when it is installed (Application
    Insights then charts and alerts on it); otherwise the log lines carry it."""
    try:
        from opentelemetry import metrics
    except ImportError:
        return
    counter = metrics.get_meter("dataverse").create_counter(
        "dataverse.health.failures", description="failed health checks"
    )
    counter.add(failures)


async def service_bus_dead_letters(endpoint: EndpointSpec) -> int:
    """Dead-lettered messages of an endpoint's queue or subscriptions (needs the Service Bus
    Data Owner role, or Reader on the namespace for management operations)."""
    from azure.identity.aio import DefaultAzureCredential
    from azure.servicebus.aio.management import ServiceBusAdministrationClient

    async with (
        DefaultAzureCredential() as credential,
        ServiceBusAdministrationClient(
            f"{endpoint.namespace}.servicebus.windows.net", credential
        ) as admin,
    ):
        if endpoint.contract == "queue":
            properties = await admin.get_queue_runtime_properties(endpoint.path)
            return properties.dead_letter_message_count or 0
        total = 0
        async for subscription in admin.list_subscriptions_runtime_properties(endpoint.path):
            total += subscription.dead_letter_message_count or 0
        return total
