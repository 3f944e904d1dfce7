"""Service endpoints and steps as code: make Dataverse match infra/environments/<env>.toml.

    python -m tools.endpoints steps --env dev     # the steps the handlers need, as JSON; offline
    python -m tools.endpoints plan  --env dev     # what would change; changes nothing
    python -m tools.endpoints apply --env dev     # create or update, idempotently

The steps are derived from the handlers' routes (shared/steps.py) and merged with the
environment file's: a step the file declares for the same table, message and stage overrides
the derived one, and the file adds steps of its own. `steps` needs no credentials and exits 1
when a route would receive no events, or less than it reads, from those steps.

One routine does both (plan is apply without the writes), so they cannot disagree. It creates or
updates `serviceendpoints`, `sdkmessageprocessingsteps` and `sdkmessageprocessingstepimages`,
resolving `sdkmessages` and `sdkmessagefilters` by name, inside the environment's solution when
one is named. It always re-applies the SAS key, because solution imports never carry it and a
rotation in Azure leaves Dataverse posting with the old one. It refuses the .NET binary message
format unless --allow-binary. Steps Dataverse has for an endpoint but the file does not are
reported, never deleted.

The key comes from the environment variable the file names (sas_key_env) or from Key Vault
(sas_key_vault = "<vault>/<secret>", or the secret's URL in clouds other than Azure's public
one), read with the caller's Azure credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from shared.dataverse import DataverseClient, RequestOptions, create_client
from shared.dataverse.addressing import literal
from shared.registration import (
    IMAGE_TYPES,
    MODES,
    EndpointSpec,
    EnvironmentSpec,
    SpecError,
    StepSpec,
    load_environment,
)
from shared.settings import Settings
from shared.steps import uncovered
from shared.vault import read_vault_secret, secret_url
from tools.flow_registration import reconcile_flows

KeySource = Callable[[EndpointSpec], Awaitable[str]]


@dataclass
class Report:
    """What reconciling found or did, one line per change."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.changes.append(line)


def _differences(existing: dict[str, Any], desired: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        column: (existing.get(column), value)
        for column, value in desired.items()
        if existing.get(column) != value
    }


def _describe(differences: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{column} {old!r} -> {new!r}" for column, (old, new) in differences.items())


class Reconciler:
    def __init__(
        self,
        client: DataverseClient,
        spec: EnvironmentSpec,
        *,
        apply: bool,
        sas_key: KeySource,
        allow_binary: bool = False,
    ) -> None:
        self.client = client
        self.spec = spec
        self.apply = apply
        self.sas_key = sas_key
        self.allow_binary = allow_binary
        self.report = Report()
        # No tag: these writes are configuration, not data that comes back as events.
        self.options = RequestOptions(tag="", solution_unique_name=spec.solution)
        self._messages: dict[str, str] = {}

    async def run(self) -> Report:
        for endpoint in self.spec.endpoints:
            if endpoint.message_format == "binary" and not self.allow_binary:
                raise SpecError(
                    f"endpoint {endpoint.name}: the .NET binary format is refused (the app reads "
                    "it, but JSON is smaller, faster to decode and readable by any consumer); "
                    "pass --allow-binary to register it anyway"
                )
        for endpoint in self.spec.endpoints:
            await self._endpoint(endpoint)
        await reconcile_flows(
            self.client,
            self.spec,
            apply=self.apply,
            options=self.options,
            add=self.report.add,
            note=self.report.notes.append,
        )
        return self.report

    async def _endpoint(self, endpoint: EndpointSpec) -> None:
        desired = endpoint.columns()
        existing = await self.client.first(
            "serviceendpoints", filter=f"name eq {literal(endpoint.name)}"
        )
        endpoint_id: UUID | None = None
        if existing is None:
            self.report.add(
                f"+ serviceendpoint {endpoint.name} ({endpoint.contract} {endpoint.namespace}/"
                f"{endpoint.path}, {endpoint.message_format})"
            )
            if self.apply:
                key = await self.sas_key(endpoint)
                endpoint_id = await self.client.create(
                    "serviceendpoints", {**desired, "saskey": key}, options=self.options
                )
        else:
            endpoint_id = UUID(existing["serviceendpointid"])
            await self._update_differences(
                f"serviceendpoint {endpoint.name}",
                "serviceendpoints",
                endpoint_id,
                existing,
                desired,
            )
            # Always: imports and rotations leave Dataverse with no key or an old one.
            self.report.notes.append(f"= serviceendpoint {endpoint.name}: SAS key re-applied")
            if self.apply:
                key = await self.sas_key(endpoint)
                await self.client.update(
                    "serviceendpoints", endpoint_id, {"saskey": key}, options=self.options
                )
        existing_steps: dict[str, dict[str, Any]] = {}
        if existing is not None and endpoint_id is not None:
            async for row in self.client.query(
                "sdkmessageprocessingsteps", filter=f"_eventhandler_value eq {endpoint_id}"
            ):
                existing_steps[row["name"]] = row
        wanted = set()
        for step in endpoint.steps:
            name = step.name(endpoint.name)
            wanted.add(name)
            await self._step(endpoint, endpoint_id, step, existing_steps.get(name))
        for name in sorted(set(existing_steps) - wanted):
            self.report.notes.append(
                f"! step '{name}' is registered but not in the file (left as is)"
            )

    async def _update_differences(
        self,
        label: str,
        entity_set: str,
        row_id: UUID,
        existing: dict[str, Any],
        desired: dict[str, Any],
    ) -> None:
        """Report the columns that differ and, when applying, update just those."""
        differences = _differences(existing, desired)
        if not differences:
            return
        self.report.add(f"~ {label}: {_describe(differences)}")
        if self.apply:
            await self.client.update(
                entity_set,
                row_id,
                {column: new for column, (_, new) in differences.items()},
                options=self.options,
            )

    async def _message_id(self, message: str) -> str:
        if message not in self._messages:
            found = await self.client.first("sdkmessages", filter=f"name eq {literal(message)}")
            if found is None:
                raise SpecError(f"Dataverse has no message {message!r}")
            self._messages[message] = found["sdkmessageid"]
        return self._messages[message]

    async def _step(
        self,
        endpoint: EndpointSpec,
        endpoint_id: UUID | None,
        step: StepSpec,
        existing: dict[str, Any] | None,
    ) -> None:
        name = step.name(endpoint.name)
        desired: dict[str, Any] = {
            "name": name,
            "stage": step.stage,
            "mode": step.mode,
            "rank": step.rank,
            "supporteddeployment": 0,  # server only
            "asyncautodelete": step.mode == 1,  # keep failed jobs for the health check
            "filteringattributes": ",".join(step.filtering_attributes) or None,
            "statecode": 0,  # enabled: a disabled step is re-enabled
            "statuscode": 1,
        }
        step_id: UUID | None = None
        if existing is None:
            filtering = (
                f", filtering {desired['filteringattributes']}" if step.filtering_attributes else ""
            )
            self.report.add(f"+ step '{name}' (stage {step.stage}, mode {step.mode}{filtering})")
            if self.apply:
                assert endpoint_id is not None
                message_id = await self._message_id(step.message)
                binds = {
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
                    "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                }
                message_filter = await self.client.first(
                    "sdkmessagefilters",
                    filter=f"_sdkmessageid_value eq {message_id} and primaryobjecttypecode eq "
                    f"{literal(step.entity)}",
                )
                if message_filter is not None:
                    binds["sdkmessagefilterid@odata.bind"] = (
                        f"/sdkmessagefilters({message_filter['sdkmessagefilterid']})"
                    )
                elif step.entity != "none":
                    raise SpecError(f"Dataverse has no {step.message} message for {step.entity}")
                state = {key: desired.pop(key) for key in ("statecode", "statuscode")}
                step_id = await self.client.create(
                    "sdkmessageprocessingsteps", {**desired, **binds}, options=self.options
                )
                desired.update(state)
        else:
            step_id = UUID(existing["sdkmessageprocessingstepid"])
            await self._update_differences(
                f"step '{name}'", "sdkmessageprocessingsteps", step_id, existing, desired
            )
        await self._images(name, step, step_id, existing is not None)

    async def _images(
        self, step_name: str, step: StepSpec, step_id: UUID | None, step_existed: bool
    ) -> None:
        existing: dict[str, dict[str, Any]] = {}
        if step_existed and step_id is not None:
            async for row in self.client.query(
                "sdkmessageprocessingstepimages",
                filter=f"_sdkmessageprocessingstepid_value eq {step_id}",
            ):
                existing[row["name"]] = row
        for image in step.images:
            desired = {
                "name": image.name,
                "entityalias": image.name,
                "imagetype": IMAGE_TYPES[image.type],
                "messagepropertyname": "Id" if step.message == "Create" else "Target",
                "attributes": ",".join(image.attributes) or None,
            }
            found = existing.get(image.name)
            if found is None:
                self.report.add(f"+ image {image.name} on '{step_name}' ({image.type})")
                if self.apply and step_id is not None:
                    await self.client.create(
                        "sdkmessageprocessingstepimages",
                        {
                            **desired,
                            "sdkmessageprocessingstepid@odata.bind": (
                                f"/sdkmessageprocessingsteps({step_id})"
                            ),
                        },
                        options=self.options,
                    )
                continue
            await self._update_differences(
                f"image {image.name} on '{step_name}'",
                "sdkmessageprocessingstepimages",
                UUID(found["sdkmessageprocessingstepimageid"]),
                found,
                desired,
            )


async def key_from_configuration(endpoint: EndpointSpec) -> str:
    """The SAS key from the environment variable the file names, or from Key Vault."""
    if endpoint.sas_key_env:
        key = os.environ.get(endpoint.sas_key_env, "")
        if not key:
            raise SpecError(
                f"endpoint {endpoint.name}: environment variable {endpoint.sas_key_env} is empty"
            )
        return key
    assert endpoint.sas_key_vault is not None
    from azure.identity.aio import DefaultAzureCredential

    try:
        async with DefaultAzureCredential() as credential:
            return await read_vault_secret(secret_url(endpoint.sas_key_vault), credential)
    except SpecError as error:
        raise SpecError(f"endpoint {endpoint.name}: {error}") from None


async def reconcile(
    client: DataverseClient,
    spec: EnvironmentSpec,
    *,
    apply: bool,
    sas_key: KeySource = key_from_configuration,
    allow_binary: bool = False,
) -> Report:
    return await Reconciler(
        client, spec, apply=apply, sas_key=sas_key, allow_binary=allow_binary
    ).run()


def step_rows(spec: EnvironmentSpec) -> list[dict[str, Any]]:
    """Every step of the environment as the `steps` command prints it."""
    modes = {number: name for name, number in MODES.items()}
    rows = []
    for endpoint in spec.endpoints:
        for step in endpoint.steps:

            def columns(kinds: set[str], step: StepSpec = step) -> list[str]:
                found: set[str] = set()
                for image in step.images:
                    if image.type in kinds:
                        found.update(image.attributes or ["*"])
                return sorted(found)

            rows.append(
                {
                    "table": step.entity,
                    "message": step.message,
                    "stage": step.stage,
                    "mode": modes.get(step.mode, step.mode),
                    "filtering_attributes": list(step.filtering_attributes),
                    "pre_image": columns({"pre", "both"}),
                    "post_image": columns({"post", "both"}),
                    "images": [
                        {"name": i.name, "type": i.type, "attributes": list(i.attributes)}
                        for i in step.images
                    ],
                    "endpoint": endpoint.name,
                    "source": step.source,
                    "routes": list(step.routes),
                    "name": step.name(endpoint.name),
                }
            )
    return rows


def print_steps(spec: EnvironmentSpec) -> int:
    print(json.dumps(step_rows(spec), indent=2))
    steps = [step for endpoint in spec.endpoints for step in endpoint.steps]
    problems = uncovered(spec.routes, steps)
    for problem in problems:
        print(f"uncovered: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.endpoints",
        description="Service endpoints and steps as code: derive, plan and apply the steps an "
        "environment needs.",
    )
    parser.add_argument(
        "command",
        choices=["steps", "plan", "apply"],
        help="steps: print the steps as JSON, offline; plan: what apply would change; "
        "apply: make Dataverse match",
    )
    parser.add_argument(
        "--env", required=True, help="environment name: reads infra/environments/<env>.toml"
    )
    parser.add_argument(
        "--allow-binary",
        action="store_true",
        help="register endpoints whose message_format is binary (refused by default)",
    )
    parser.add_argument(
        "--dataverse-url",
        help="reconcile this Dataverse instead of the file's dataverse_url (e.g. a local "
        "emulator, http://127.0.0.1:<port>, which needs no login)",
    )
    parser.add_argument(
        "--handlers",
        default="handlers",
        help="the package whose routes the steps are derived from (default: handlers)",
    )
    args = parser.parse_args(argv)
    try:
        spec = load_environment(args.env, handlers=args.handlers)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "steps":
        return print_steps(spec)
    if args.dataverse_url:
        spec = replace(spec, dataverse_url=args.dataverse_url.rstrip("/"))

    async def run() -> Report:
        async with create_client(Settings(dataverse_url=spec.dataverse_url)) as client:
            return await reconcile(
                client, spec, apply=args.command == "apply", allow_binary=args.allow_binary
            )

    try:
        report = asyncio.run(run())
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verb = "applied" if args.command == "apply" else "to apply"
    print(f"{spec.name} ({spec.dataverse_url}): {len(report.changes)} changes {verb}")
    for line in [*report.changes, *report.notes]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
