"""The whole loop on one machine: a local Dataverse that posts events, the app consuming them.

    python -m tools.demo [--env local] [--verbose]

1. Registers the `local` environment's service endpoint and steps in the embedded Dataverse
   emulator with `tools.endpoints apply`, the steps derived from the handlers' routes.
2. Makes a few changes as a person would (an account, a contact, an email change, a phone
   change, a delete), each through the Web API with that person's token.
3. The emulator posts a context for every write a step matches, with the claims Dataverse
   sets, to an in-memory queue; the app drains it through its own Service Bus handling
   (dispatcher, handlers, settlement). The handlers' writes come back as events when a step
   matches them, and the loop guard skips them: they were initiated by the app's user.

It prints, per event, the table and message, who initiated it, the outcome and the handlers
that ran, and per posting system job whether it succeeded. No Azure account is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import httpx
import orjson

from shared.app import build
from shared.dataverse import DataverseClient, RequestOptions
from shared.dispatch import Outcome
from shared.registration import load_environment
from shared.servicebus import handle_message
from shared.settings import Settings
from tools.emulator import AnyToken, DataverseEmulator
from tools.emulator.posting import PostedMessage
from tools.endpoints import reconcile
from tools.replay import RecordingTransport, describe

ENVIRONMENT = "https://contoso.crm.dynamics.com"
HOST = "contoso.crm.dynamics.com"
APP_TOKEN, PERSON_TOKEN, PIPELINE_TOKEN = "app-user", "nancy", "pipeline"
APP_OBJECT_ID = UUID("a9900000-0000-4000-8000-0000000000a1")
SDK_MESSAGES = {
    "Create": ["account", "contact", "task", "phonecall"],
    "Update": ["account", "contact", "task", "phonecall"],
    "Delete": ["account", "contact", "task", "phonecall"],
}


class Settlement:
    """Records how the app settled each message (ServiceBusMessageActions' methods)."""

    def __init__(self) -> None:
        self.settled: dict[str, str] = {}

    def complete(self, message: Any) -> None:
        self.settled[message.message_id] = "completed"

    def abandon(self, message: Any) -> None:
        self.settled[message.message_id] = "abandoned"

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        self.settled[message.message_id] = f"dead-lettered ({deadletter_reason})"


def client(emulator: DataverseEmulator, token: str) -> DataverseClient:
    return DataverseClient(
        ENVIRONMENT, auth=AnyToken(token), transport=httpx.ASGITransport(app=emulator)
    )


class SpanTree:
    """Collects the spans of each event and prints them as a tree with durations, the story
    Application Insights' transaction view tells, on the terminal."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        trace.set_tracer_provider(provider)

    def print_and_clear(self) -> None:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        children: dict[int | None, list[Any]] = {}
        for span in spans:
            parent = span.parent.span_id if span.parent else None
            children.setdefault(parent, []).append(span)

        def show(span: Any, depth: int) -> None:
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            attributes = span.attributes or {}
            detail = attributes.get("dataverse.outcome") or attributes.get(
                "http.response.status_code", ""
            )
            print(f"  trace    {'  ' * depth}{span.name} {took:.1f} ms {detail}".rstrip())
            for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time):
                show(child, depth + 1)

        for root in children.get(None, []):
            show(root, 0)


async def drain(
    emulator: DataverseEmulator,
    path: str,
    handle: Callable[[PostedMessage], Awaitable[Outcome]],
    names: dict[str, str],
    recorder: RecordingTransport,
    tree: SpanTree | None = None,
) -> int:
    """Deliver every posted message, including those the handlers' writes cause."""
    delivered = 0
    while (message := emulator.broker.receive(path)) is not None:
        delivered += 1
        claims = {
            key.rsplit("/", 1)[-1]: value for key, value in message.application_properties.items()
        }
        outcome = await handle(message)
        if "DataverseFlowRunId" in claims:  # a cloud flow's row (shared/context/flow.py)
            row = orjson.loads(message.body)
            print(
                f"  event    {row.get('SdkMessage')} of {claims.get('DataverseTable')} through "
                f"the cloud flow {message.endpoint!r}"
            )
        else:
            who = names.get(claims.get("InitiatingUser", ""), claims.get("InitiatingUser", "?"))
            print(
                f"  event    {claims.get('RequestName')} of {claims.get('EntityLogicalName')} "
                f"by {who}"
            )
        print(f"  outcome  {describe(outcome)}")
        for call in recorder.calls:
            print(f"  web api  {call}")
        if tree is not None:
            tree.print_and_clear()
    return delivered


async def run(environment: str, handlers: str = "handlers", trace: bool = False) -> int:
    os.environ.setdefault("DATAVERSE_SAS_KEY", "local-demo-key")  # a made-up key, local only
    tree = SpanTree() if trace else None
    spec = load_environment(environment, handlers=handlers)
    emulator = DataverseEmulator(environment_url=ENVIRONMENT)
    emulator.seed_sdk_messages(SDK_MESSAGES)
    app_user = emulator.add_identity(APP_TOKEN, "Event consumers (application user)", APP_OBJECT_ID)
    person = emulator.add_identity(PERSON_TOKEN, "Nancy Davolio")
    names = {str(app_user.system_user_id): "the app", str(person.system_user_id): "Nancy"}

    print(f"1. Registering the {environment} steps (derived from the handlers' routes)")
    for flow in spec.flows:  # the maker's part: a connection behind each connection reference
        for reference in (flow.connection_reference, flow.dataverse_connection_reference):
            if reference:
                print(f"  (the maker connects {reference} in Power Automate)")
                connect_reference(emulator, reference)
    async with client(emulator, PIPELINE_TOKEN) as pipeline:
        report = await reconcile(pipeline, spec, apply=True)
    for line in report.changes:
        print(f"  {line}")

    settings = Settings(
        # By id (service endpoints' contexts) and host (flows' DataverseOrganization property).
        allowed_organizations=frozenset({str(emulator.organization_id), HOST}),
        app_user_object_id=str(APP_OBJECT_ID),
    )
    recorder = RecordingTransport(httpx.ASGITransport(app=emulator))
    app_client = DataverseClient(ENVIRONMENT, auth=AnyToken(APP_TOKEN), transport=recorder)
    runtime = build(settings, handlers=handlers, dataverse=app_client)
    settlement = Settlement()

    async def handle(message: PostedMessage) -> Outcome:
        recorder.calls.clear()
        return await handle_message(runtime.dispatcher, message, settlement)

    (endpoint,) = [e for e in spec.endpoints if e.contract == "queue"] or [spec.endpoints[0]]
    delivered = 0
    async with client(emulator, PERSON_TOKEN) as nancy:
        state: dict[str, Any] = {}
        for number, (label, change) in enumerate(CHANGES, 2):
            print(f"\n{number}. {label}")
            await change(nancy, state)
            if tree is not None:
                tree.exporter.clear()  # the change's own requests, before any event
            delivered += await drain(emulator, endpoint.path, handle, names, recorder, tree)
    if spec.canary is not None:
        delivered += await canary_round_trip(
            emulator, spec, runtime, app_client, lambda: drain(
                emulator, endpoint.path, handle, names, recorder, tree
            )
        )  # fmt: skip
    await app_client.aclose()
    jobs = emulator.rows("asyncoperations")
    succeeded = sum(1 for job in jobs if job["statuscode"] == 30)
    print(
        f"\n{delivered} events delivered; {len(jobs)} posting system jobs, {succeeded} "
        f"succeeded; settled: {summary(settlement.settled)}"
    )
    return 0


def connect_reference(emulator: DataverseEmulator, reference: str) -> None:
    """A connection behind a flow's connection reference: made by hand in Power Automate."""
    row_id = str(uuid5(NAMESPACE_URL, "connectionreference:" + reference))
    emulator.store.put(
        "connectionreferences",
        row_id,
        {"connectionreferenceid": row_id, "connectionreferencelogicalname": reference,
         "connectionid": "shared-" + reference, "statecode": 0},
    )  # fmt: skip


async def create_canary_row(pipeline: DataverseClient, spec: Any) -> None:
    """The row the canary changes, created quietly (no step runs for its creation)."""
    await pipeline.upsert(
        spec.canary.entity_set,
        UUID(spec.canary.row_id),
        {"name": "Canary"},
        options=RequestOptions(bypass_business_logic="CustomAsync"),
    )


async def canary_round_trip(
    emulator: DataverseEmulator,
    spec: Any,
    runtime: Any,
    monitor: DataverseClient,
    deliver: Callable[[], Awaitable[int]],
) -> int:
    """The health run's canary: sent, delivered through the endpoint's canary step, recorded
    by the dispatcher, reported by the next run."""
    from datetime import UTC, datetime, timedelta

    from shared.health import run_checks

    print(f"\n{len(CHANGES) + 2}. The health run sends a canary through every path")
    async with client(emulator, PIPELINE_TOKEN) as pipeline:
        await create_canary_row(pipeline, spec)
    since = datetime.now(UTC) - timedelta(minutes=20)
    canaries = runtime.dispatcher.canaries
    await run_checks(monitor, spec, since=since, canaries=canaries)
    delivered = await deliver()
    results = await run_checks(monitor, spec, since=since, canaries=canaries)
    for result in results:
        if result.check == "canary":
            print(f"  health   {result.line()}")
    return delivered


def summary(settled: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for how in settled.values():
        counts[how] = counts.get(how, 0) + 1
    return ", ".join(f"{count} {how}" for how, count in sorted(counts.items())) or "none"


async def create_account(nancy: DataverseClient, state: dict[str, Any]) -> None:
    state["account"] = await nancy.create("accounts", {"name": "Northwind Traders"})


async def create_contact(nancy: DataverseClient, state: dict[str, Any]) -> None:
    state["contact"] = await nancy.create(
        "contacts",
        {
            "firstname": "Nancy",
            "lastname": "Davolio",
            "emailaddress1": "nancy@example.com",
            "parentcustomerid_account@odata.bind": f"/accounts({state['account']})",
        },
    )


async def change_email(nancy: DataverseClient, state: dict[str, Any]) -> None:
    await nancy.update("contacts", state["contact"], {"emailaddress1": "nancy.d@example.com"})


async def change_phone(nancy: DataverseClient, state: dict[str, Any]) -> None:
    await nancy.update("contacts", state["contact"], {"telephone1": "555-0100"})


async def delete_contact(nancy: DataverseClient, state: dict[str, Any]) -> None:
    await nancy.delete("contacts", state["contact"])


CHANGES: list[tuple[str, Callable[[DataverseClient, dict[str, Any]], Awaitable[None]]]] = [
    ("Nancy creates the account Northwind Traders", create_account),
    ("Nancy adds a contact to it", create_contact),
    ("Nancy changes the contact's email", change_email),
    ("Nancy changes the contact's phone", change_phone),
    ("Nancy deletes the contact", delete_contact),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="The whole loop on one machine: register steps in a local Dataverse, make "
        "changes, and watch the app consume the events it posts.",
    )
    parser.add_argument(
        "--env", default="local", help="environment file to register (default: local)"
    )
    parser.add_argument(
        "--handlers", default="handlers", help="the package of handler modules (default: handlers)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the app's log lines")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each event's spans as a tree with durations (OpenTelemetry, in memory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="    log  %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the demo prints the canary's line itself
        logging.getLogger("dataverse.health").setLevel(logging.CRITICAL)
    return asyncio.run(run(args.env, args.handlers, args.trace))


if __name__ == "__main__":
    sys.exit(main())
