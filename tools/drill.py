"""Drills an operator can run on one machine: break one thing on the sending side, and see
which health check catches it.

    python -m tools.drill --list
    python -m tools.drill <fault>

Each drill sets up the embedded environment (the local Dataverse with the `local`
environment's endpoint, steps, canary row and a publishing flow registered, the app consuming
its queue), runs the health checks and the canary once healthy, breaks one thing, lets time
pass (one health period, then another), and prints the health report. It exits 0 when the
check that should catch the fault failed and nothing else did except the checks that see its
effect (a silent canary, jobs that failed or wait because of it); 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.app import build
from shared.canary import InMemoryCanaryStore
from shared.dataverse import DataverseClient
from shared.health import CheckResult, run_checks
from shared.health_delivery import QueueState
from shared.registration import EndpointSpec, EnvironmentSpec, load_environment
from shared.servicebus import handle_message
from shared.settings import Settings
from tools.demo import (
    APP_OBJECT_ID,
    ENVIRONMENT,
    Settlement,
    client,
    connect_reference,
    create_canary_row,
)
from tools.emulator import DataverseEmulator
from tools.endpoints import reconcile

HEALTH_PERIOD = timedelta(minutes=16)  # a little over the default 15-minute schedule
SECRET_LIFETIME = timedelta(days=180)
FLOW = "Publish account changes to Service Bus"


@dataclass(frozen=True)
class Fault:
    catches: str  # the check that must fail
    effects: frozenset[str]  # checks that may fail too, because they see the fault's effect
    what: str


FAULTS = {
    "step-disabled": Fault("step-enabled", frozenset(), "someone turns a step off in Dataverse"),
    "key-removed": Fault(
        "sas-key-set",
        frozenset({"endpoint-check", "failed-jobs", "canary"}),
        "the service endpoint loses its SAS key (a solution import, a reset)",
    ),
    "endpoint-unreachable": Fault(
        "endpoint-check",
        frozenset({"waiting-jobs", "canary"}),
        "Dataverse cannot reach the namespace (deleted, renamed, network)",
    ),
    # The flow's own canary path goes silent too: the service endpoint's still delivers.
    "flow-off": Fault("flow-on", frozenset({"canary"}), "the publishing flow is turned off"),
    "connection-broken": Fault(
        "connection",
        frozenset({"canary"}),
        "the flow's Service Bus connection reference loses its connection",
    ),
    "consumer-stopped": Fault(
        "queue-age", frozenset({"canary"}), "the function app stops consuming the queue"
    ),
    "credential-expiring": Fault(
        "secret-expiry", frozenset(), "the send key's Key Vault copy expires in 10 days"
    ),
}


class DrillProbes:
    """What Azure would answer about the queue and the secret, from the local broker."""

    def __init__(self, emulator: DataverseEmulator, clock: Callable[[], datetime]) -> None:
        self.emulator = emulator
        self.clock = clock
        self.secret_expiry = clock() + SECRET_LIFETIME

    async def queue(self, endpoint: EndpointSpec) -> QueueState | None:
        pending = list(self.emulator.broker.queues.get(endpoint.path, ()))
        oldest = min((m.enqueued_time_utc for m in pending), default=None)
        return QueueState(len(pending), oldest)

    async def secret_expires(self, endpoint: EndpointSpec) -> datetime | None:
        return self.secret_expiry


class Drill:
    def __init__(self, environment: str = "local") -> None:
        self.spec: EnvironmentSpec = load_environment(environment)
        self.now = datetime.now(UTC)
        self.emulator = DataverseEmulator(environment_url=ENVIRONMENT)
        self.emulator.clock = lambda: self.now
        self.emulator.seed_sdk_messages(
            {m: ["account", "contact"] for m in ("Create", "Update", "Delete")}
        )
        self.emulator.add_identity("app-user", "Event consumers", APP_OBJECT_ID)
        self.canaries = InMemoryCanaryStore()
        self.probes = DrillProbes(self.emulator, lambda: self.now)
        self.consuming = True
        self.settlement = Settlement()

    def client(self, token: str) -> DataverseClient:
        return client(self.emulator, token)

    async def setup(self) -> None:
        async def key(endpoint: EndpointSpec) -> str:
            return "local-drill-key"

        # The maker's part, done by hand in Power Automate: the connections behind the flows'
        # connection references. Then registration as code creates the flows and turns them on.
        for flow in self.spec.flows:
            for reference in (flow.connection_reference, flow.dataverse_connection_reference):
                if reference:
                    connect_reference(self.emulator, reference)
        async with self.client("pipeline") as pipeline:
            await reconcile(pipeline, self.spec, apply=True, sas_key=key)
            if self.spec.canary is not None:
                await create_canary_row(pipeline, self.spec)
        settings = Settings(
            allowed_organizations=frozenset(
                {str(self.emulator.organization_id), "contoso.crm.dynamics.com"}
            ),
            app_user_object_id=str(APP_OBJECT_ID),
        )
        self.app_client = self.client("app-user")
        self.runtime = build(settings, dataverse=self.app_client)
        self.runtime.dispatcher.canaries = self.canaries
        self.runtime.dispatcher._clock = lambda: self.now.timestamp()

    async def consume(self) -> None:
        if not self.consuming:
            return
        for endpoint in self.spec.endpoints:
            while (message := self.emulator.broker.receive(endpoint.path)) is not None:
                await handle_message(self.runtime.dispatcher, message, self.settlement)

    async def health(self) -> list[CheckResult]:
        async with self.client("app-user") as monitor:
            return await run_checks(
                monitor,
                self.spec,
                since=self.now - timedelta(minutes=20),
                canaries=self.canaries,
                probes=self.probes,
                now=self.now,
            )

    async def cycle(self) -> list[CheckResult]:
        """One health period: time passes, the health run, the app consumes what it posted."""
        self.now += HEALTH_PERIOD
        results = await self.health()
        self.now += timedelta(seconds=3)
        await self.consume()
        return results

    async def close(self) -> None:
        await self.app_client.aclose()

    # --- the faults ----------------------------------------------------------------------------

    def _update(
        self, entity_set: str, match: Callable[[dict[str, Any]], bool], **changes: object
    ) -> None:
        key = self.emulator.tables[entity_set].primary_id
        for row in self.emulator.rows(entity_set):
            if match(row):
                row.update(changes)
                self.emulator.store.put(entity_set, row[key], row)

    def inject(self, fault: str) -> None:
        emulator = self.emulator
        if fault == "step-disabled":
            self._update(
                "sdkmessageprocessingsteps",
                lambda row: "Update of contact" in row["name"],
                statecode=1,
                statuscode=2,
            )
        elif fault == "key-removed":
            self._update("serviceendpoints", lambda row: True, issaskeyset=False)
        elif fault == "endpoint-unreachable":
            emulator.unreachable_endpoints.update(e.name for e in self.spec.endpoints)
        elif fault == "flow-off":
            self._update("workflows", lambda row: True, statecode=0, statuscode=1)
        elif fault == "connection-broken":
            self._update("connectionreferences", lambda row: True, connectionid=None)
        elif fault == "consumer-stopped":
            self.consuming = False
        elif fault == "credential-expiring":
            self.probes.secret_expiry = self.now + timedelta(days=10) + 2 * HEALTH_PERIOD
        else:
            raise ValueError(f"no such fault {fault!r}")


async def run_drill(fault: str | None) -> tuple[list[CheckResult], list[CheckResult]]:
    """The health report before the fault and after it (two health periods later)."""
    drill = Drill()
    await drill.setup()
    await drill.cycle()  # sends the first canary
    before = await drill.cycle()  # it arrived: all healthy
    if fault is not None:
        drill.inject(fault)
    await drill.cycle()  # the fault meets the next canary
    after = await drill.cycle()
    await drill.close()
    return before, after


def verdict(fault: str, results: list[CheckResult]) -> tuple[bool, str]:
    expected = FAULTS[fault]
    failed = {result.check for result in results if not result.ok}
    unexpected = failed - {expected.catches} - expected.effects
    if expected.catches not in failed:
        return False, f"{expected.catches} did not catch it (failed: {sorted(failed) or 'none'})"
    if unexpected:
        return False, f"caught by {expected.catches}, but {sorted(unexpected)} failed too"
    return True, f"caught by {expected.catches}" + (
        f" (and {', '.join(sorted(failed - {expected.catches}))}, which see its effect)"
        if failed - {expected.catches}
        else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.drill",
        description="Break one thing on the sending side of a local environment and see which "
        "health check catches it. Exits 0 when the right check did, and no other.",
    )
    parser.add_argument("fault", nargs="?", choices=sorted(FAULTS), help="the fault to inject")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the report below says it all, once
    if args.list or args.fault is None:
        for name, fault in FAULTS.items():
            print(f"{name:<22} {fault.what}; caught by {fault.catches}")
        return 0 if args.list else 2
    before, after = asyncio.run(run_drill(args.fault))
    print(f"drill {args.fault}: {FAULTS[args.fault].what}\n")
    if any(not result.ok for result in before):
        print("the environment was not healthy before the fault:")
        for result in before:
            print(f"  {result.line()}")
        return 1
    for result in after:
        print(f"  {result.line()}")
    ok, summary = verdict(args.fault, after)
    print(f"\n{'PASS' if ok else 'FAIL'}: {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
