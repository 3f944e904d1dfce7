"""Replay Dataverse messages through the real dispatcher and handlers.

    python -m tools.replay [FILES...] [--twice] [--verbose]
    python -m tools.replay FILES... --dataverse-url https://contoso.crm.dynamics.com

Without files it replays the bundled example messages (tests/fixtures/contexts: JSON, XML and
.NET binary bodies). By default the handlers write to an embedded Dataverse emulator, seeded
with the rows the messages are about; with --dataverse-url they write to a real environment
with your developer credentials (Azure CLI, VS Code...). For each message it prints the outcome,
the handlers that ran and the Web API calls they made. --twice delivers every message again, as
a broker redelivery would, to show that nothing is applied twice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from shared.app import build
from shared.context import message_format
from shared.dataverse import DataverseClient, create_client
from shared.dispatch import Completed, Outcome, Retry, Skipped
from shared.errors import InvalidMessage
from shared.events import DataverseEvent
from shared.settings import Settings
from tools.emulator import AnyToken, DataverseEmulator

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "contexts"
EXAMPLE_ORGANIZATION = "0f000000-0000-4000-8000-0000000000aa"
_CONTENT_TYPES = {
    "json": "application/json",
    "xml": "application/xml",
    "binary": "application/msbin1",
}


class RecordingTransport(httpx.AsyncBaseTransport):
    """Notes every Web API call on its way to the real transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        path = request.url.path.split("/api/data/v9.2/", 1)[-1]
        query = f"?{request.url.query.decode()}" if request.url.query else ""
        self.calls.append(f"{request.method} {path}{query} -> {response.status_code}")
        return response


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, Completed):
        return "Completed: " + (", ".join(outcome.handlers) or "no handler for this event")
    if isinstance(outcome, Skipped):
        return f"Skipped ({outcome.reason}): {outcome.detail}"
    if isinstance(outcome, Retry):
        return f"Retry ({outcome.reason}): {outcome.detail}"
    return f"DeadLetter ({outcome.reason}): {outcome.description}"


def event_for(path: Path, message_id: str) -> DataverseEvent:
    body = path.read_bytes()
    try:
        content_type = _CONTENT_TYPES[message_format(body)]
    except InvalidMessage:
        content_type = None
    return DataverseEvent(body=body, content_type=content_type, message_id=message_id)


async def seed(
    client: DataverseClient, emulator: DataverseEmulator, events: Sequence[DataverseEvent]
) -> None:
    """Create the rows the messages are about, as they would exist in Dataverse."""
    sets = {table.logical_name: table.entity_set for table in emulator.tables.values()}
    for event in events:
        try:
            context = event.context
        except InvalidMessage:
            continue
        entity_set = sets.get(context.primary_entity_name)
        if entity_set and context.primary_entity_id.int:
            await client.upsert(entity_set, context.primary_entity_id, {}, options=None)


def organizations_of(events: Sequence[DataverseEvent]) -> set[str]:
    """The organization ids the readable messages name."""
    found = set()
    for event in events:
        try:
            found.add(str(event.context.raw("OrganizationId") or "").lower())
        except InvalidMessage:
            continue
    return found - {""}


async def replay(files: Sequence[Path], *, twice: bool, dataverse_url: str | None) -> int:
    events = [event_for(path, f"replay-{index}") for index, path in enumerate(files, 1)]
    if dataverse_url:
        settings = Settings.from_environment()
        settings = Settings(
            dataverse_url=dataverse_url,
            allowed_organizations=settings.allowed_organizations,
            write_tag=settings.write_tag,
        )
        recorder = RecordingTransport(httpx.AsyncHTTPTransport())
        client = create_client(settings, transport=recorder)
    else:
        # Locally the files are the boundary: whatever organization they come from is accepted
        # (the bundled examples', and each capture's own), so a capture is not dead-lettered
        # as foreign. In Azure, ALLOWED_ORGANIZATIONS decides.
        organizations = {EXAMPLE_ORGANIZATION} | organizations_of(events)
        settings = Settings(allowed_organizations=frozenset(organizations))
        emulator = DataverseEmulator()
        recorder = RecordingTransport(httpx.ASGITransport(app=emulator))
        client = DataverseClient(
            "https://contoso.crm.dynamics.com", auth=AnyToken(), transport=recorder
        )
        await seed(client, emulator, events)
        recorder.calls.clear()
    runtime = build(settings, dataverse=client)
    print(
        f"{len(runtime.router.routes)} handler routes; writing to "
        f"{dataverse_url or 'the embedded Dataverse emulator'}\n"
    )
    counts: dict[str, int] = {}
    rounds = [("", events)] + ([(" (delivered again)", events)] if twice else [])
    for label, batch in rounds:
        for path, event in zip(files, batch, strict=True):
            recorder.calls.clear()
            outcome = await runtime.dispatcher.process(event)
            counts[type(outcome).__name__] = counts.get(type(outcome).__name__, 0) + 1
            print(f"{path.name}{label}")
            print(f"  outcome  {describe(outcome)}")
            for call in recorder.calls:
                print(f"  web api  {call}")
    await client.aclose()
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    print(f"\n{sum(counts.values())} deliveries: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replay",
        description="Replay Dataverse messages (captured bodies: JSON, XML or .NET binary) "
        "through the real dispatcher and handlers, against the embedded emulator by default.",
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="message bodies to deliver, in order (default: the bundled examples)",
    )
    parser.add_argument(
        "--twice",
        action="store_true",
        help="deliver every message a second time, as a broker redelivery would",
    )
    parser.add_argument(
        "--dataverse-url",
        help="write to this environment instead of the emulator (your developer credentials; "
        "a loopback URL is a running emulator and needs no login)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the handlers' and the app's log lines"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="    log  %(levelname)s %(name)s: %(message)s",
    )
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    files = args.files or sorted(EXAMPLES.glob("*"))
    if not args.files:
        print(
            "The bundled examples hold each context four times: as JSON, XML, .NET binary and "
            ".NET binary with dictionary strings.\nThe first delivery of each runs the handlers; "
            "the other three are the same operation and are skipped as duplicates.\n"
        )
    return asyncio.run(replay(files, twice=args.twice, dataverse_url=args.dataverse_url))


if __name__ == "__main__":
    sys.exit(main())
