"""Check that Dataverse still posts to this app, for a pipeline or an operator.

    python -m tools.health --env dev [--since-minutes 60] [--dead-letters] [--delivery]

Prints one line per check (see shared/health.py) and exits 1 when any fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta

from shared.dataverse import create_client
from shared.health import CheckResult, run_checks, service_bus_dead_letters
from shared.registration import SpecError, load_environment
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.health",
        description="Dataverse event delivery health checks, one line per check; exits 1 when "
        "any fails.",
    )
    parser.add_argument(
        "--env", required=True, help="environment name: reads infra/environments/<env>.toml"
    )
    parser.add_argument(
        "--since-minutes",
        type=int,
        default=60,
        metavar="N",
        help="report posting jobs that failed in the last N minutes (default: 60)",
    )
    parser.add_argument(
        "--dead-letters",
        action="store_true",
        help="count each queue's and subscription's dead letters too (needs Service Bus Data "
        "Owner on the entity)",
    )
    parser.add_argument(
        "--delivery",
        action="store_true",
        help="also read the queue's oldest message (queue-age) and the send key's expiry "
        "(secret-expiry) from Azure with your identity (Service Bus Data Owner on the queue, "
        "Key Vault Secrets User)",
    )
    args = parser.parse_args(argv)
    try:
        spec = load_environment(args.env)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    async def run() -> list[CheckResult]:
        since = datetime.now(UTC) - timedelta(minutes=args.since_minutes)
        async with create_client(Settings(dataverse_url=spec.dataverse_url)) as client:
            if not args.delivery:
                return await run_checks(
                    client,
                    spec,
                    since=since,
                    dead_letters=service_bus_dead_letters if args.dead_letters else None,
                )
            from azure.identity.aio import DefaultAzureCredential

            from shared.health_azure import AzureProbes

            async with DefaultAzureCredential() as credential:
                return await run_checks(
                    client,
                    spec,
                    since=since,
                    dead_letters=service_bus_dead_letters if args.dead_letters else None,
                    probes=AzureProbes(credential),
                )

    results = asyncio.run(run())
    healthy = all(result.ok for result in results)
    print("\n".join([*(result.line() for result in results), "healthy" if healthy else "FAILED"]))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
