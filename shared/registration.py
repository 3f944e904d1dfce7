"""Service endpoints and their steps, described per environment as code.

One TOML file per environment (`infra/environments/<env>.toml`) says which service endpoints
post to this app and which steps feed them. `python -m tools.endpoints` makes Dataverse match it
(plan, apply); the health monitor checks that Dataverse still does. The SAS key never appears in
the file: it is named by an environment variable or a Key Vault secret.

    dataverse_url = "https://contoso-dev.crm.dynamics.com"
    solution = "ContosoEvents"            # optional: create components inside this solution

    [[endpoints]]
    name = "contoso-events"
    contract = "queue"                    # queue | topic | eventhub
    namespace = "contoso-events-dev"      # Service Bus / Event Hubs namespace name
    path = "dataverse-events"             # queue, topic or event hub
    message_format = "json"               # json | xml | binary (binary needs --allow-binary)
    user_claim = "userid"                 # none | userid | userinfo
    sas_key_name = "dataverse-send"
    sas_key_env = "DATAVERSE_SAS_KEY"     # or: sas_key_vault = "kv-name/secret-name"

    [[endpoints.steps]]
    message = "Update"
    entity = "contact"
    filtering_attributes = ["emailaddress1"]
    images = [{ name = "PostImage", type = "post", attributes = ["emailaddress1"] }]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ENVIRONMENTS = Path(__file__).resolve().parents[1] / "infra" / "environments"

# serviceendpoint.contract: 5 Topic, 6 Queue (persistent), 7 Event Hub.
CONTRACTS = {"queue": 6, "topic": 5, "eventhub": 7}
# serviceendpoint.messageformat: 1 .NET binary XML, 2 JSON, 3 text XML.
MESSAGE_FORMATS = {"binary": 1, "json": 2, "xml": 3}
USER_CLAIMS = {"none": 1, "userid": 2, "userinfo": 3}
STAGES = {"prevalidation": 10, "preoperation": 20, "postoperation": 40}
MODES = {"sync": 0, "async": 1}
IMAGE_TYPES = {"pre": 0, "post": 1, "both": 2}
AUTH_SAS_KEY = 2
CONNECTION_NORMAL = 1
NAMESPACE_ADDRESS = 2


class SpecError(ValueError):
    """The environment file is not valid; says where and why."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    type: str = "post"
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepSpec:
    message: str
    entity: str
    stage: int = 40
    mode: int = 1
    rank: int = 1
    filtering_attributes: tuple[str, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    source: str = "file"  # "routes": derived from the handlers (shared/steps.py)
    routes: tuple[str, ...] = ()  # the handlers a derived step feeds
    declared: frozenset[str] = frozenset()  # the settings the file gave (they override)
    canary: bool = False  # the step the canary comes through (shared/canary.py)

    def name(self, endpoint: str) -> str:
        """The step's name in Dataverse: how plan, apply and the health monitor find it."""
        if self.canary:
            return f"{endpoint}: canary ({self.message} of {self.entity})"
        return f"{endpoint}: {self.message} of {self.entity}"


@dataclass(frozen=True)
class FlowSpec:
    """A Power Automate cloud flow that publishes rows to the app's queue."""

    name: str  # the flow's display name (workflow.name)
    connection_reference: str | None = None  # its Service Bus connection reference (logical name)
    # Set `table` and `tools.endpoints apply` creates the flow from infra/flows/publish-rows.json
    # (shared/flow_definition.py); without it the flow is made by hand and only checked.
    table: str | None = None
    messages: tuple[str, ...] = ("Create", "Update", "Delete")
    queue: str | None = None  # default: the first endpoint's queue
    dataverse_connection_reference: str | None = None
    prefix: str = "contoso"  # the publisher prefix of its environment variables


@dataclass(frozen=True)
class CanarySpec:
    """The row the health run changes on purpose, and the column it writes."""

    table: str  # logical name
    entity_set: str
    row_id: str
    column: str

    def step(self) -> StepSpec:
        return StepSpec(
            message="Update",
            entity=self.table,
            filtering_attributes=(self.column,),
            source="canary",
            canary=True,
        )


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    contract: str
    namespace: str
    path: str
    message_format: str = "json"
    user_claim: str = "userid"
    sas_key_name: str = "dataverse-send"
    sas_key_env: str | None = None
    sas_key_vault: str | None = None  # "<vault name>/<secret name>", or the secret's URL
    steps: tuple[StepSpec, ...] = ()
    derive_steps: bool = False  # takes the steps derived from the routes (when several)

    @property
    def namespace_address(self) -> str:
        return f"sb://{self.namespace}.servicebus.windows.net/"

    def columns(self) -> dict[str, Any]:
        """The serviceendpoint row this spec describes (without the SAS key)."""
        return {
            "name": self.name,
            "contract": CONTRACTS[self.contract],
            "connectionmode": CONNECTION_NORMAL,
            "authtype": AUTH_SAS_KEY,
            "saskeyname": self.sas_key_name,
            "namespaceaddress": self.namespace_address,
            "namespaceformat": NAMESPACE_ADDRESS,
            "solutionnamespace": self.namespace,
            "path": self.path,
            "messageformat": MESSAGE_FORMATS[self.message_format],
            "userclaim": USER_CLAIMS[self.user_claim],
        }


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    dataverse_url: str
    solution: str | None = None
    endpoints: tuple[EndpointSpec, ...] = field(default_factory=tuple)
    exclude_routes: tuple[str, ...] = ()  # handlers not fed in this environment
    canary: CanarySpec | None = None
    flows: tuple[FlowSpec, ...] = ()
    routes: tuple[Any, ...] = ()  # the routes its steps were derived from (shared.routing.Route)


def load_environment(
    name: str, directory: Path | None = None, *, handlers: str | None = "handlers"
) -> EnvironmentSpec:
    """The environment file, with the steps the routes of `handlers` need (None: the file's
    steps only)."""
    path = (directory or ENVIRONMENTS) / f"{name}.toml"
    if not path.exists():
        raise SpecError(f"no environment file {path}")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: {error}") from None
    spec = parse_environment(name, document, where=str(path))
    if handlers is None:
        return spec
    from shared.routing import discover
    from shared.steps import with_routes

    return with_routes(spec, discover(handlers).routes)


def parse_environment(name: str, document: Mapping[str, Any], where: str = "") -> EnvironmentSpec:
    def need(mapping: Mapping[str, Any], key: str, context: str) -> Any:
        if key not in mapping:
            raise SpecError(f"{where}: {context} needs {key!r}")
        return mapping[key]

    def choice(value: str, allowed: Mapping[str, Any], what: str, context: str) -> str:
        value = str(value).lower()
        if value not in allowed:
            raise SpecError(f"{where}: {context}: {what} must be one of {', '.join(allowed)}")
        return value

    url = str(need(document, "dataverse_url", "the file")).rstrip("/")
    endpoints = []
    for index, raw in enumerate(document.get("endpoints", [])):
        context = f"endpoints[{index}]"
        steps = []
        for step_index, step in enumerate(raw.get("steps", [])):
            step_context = f"{context}.steps[{step_index}]"
            stage = step.get("stage", 40)
            mode = step.get("mode", "async")
            steps.append(
                StepSpec(
                    message=str(need(step, "message", step_context)),
                    entity=str(need(step, "entity", step_context)).lower(),
                    stage=STAGES[choice(stage, STAGES, "stage", step_context)]
                    if isinstance(stage, str)
                    else int(stage),
                    mode=MODES[choice(mode, MODES, "mode", step_context)],
                    rank=int(step.get("rank", 1)),
                    declared=frozenset(step),
                    filtering_attributes=tuple(
                        sorted(a.lower() for a in step.get("filtering_attributes", []))
                    ),
                    images=tuple(
                        ImageSpec(
                            name=str(need(image, "name", f"{step_context}.images")),
                            type=choice(
                                image.get("type", "post"), IMAGE_TYPES, "type", step_context
                            ),
                            attributes=tuple(
                                sorted(a.lower() for a in image.get("attributes", []))
                            ),
                        )
                        for image in step.get("images", [])
                    ),
                )
            )
        if not raw.get("sas_key_env") and not raw.get("sas_key_vault"):
            raise SpecError(f"{where}: {context} needs sas_key_env or sas_key_vault")
        endpoints.append(
            EndpointSpec(
                name=str(need(raw, "name", context)),
                contract=choice(need(raw, "contract", context), CONTRACTS, "contract", context),
                namespace=str(need(raw, "namespace", context)),
                path=str(need(raw, "path", context)),
                message_format=choice(
                    raw.get("message_format", "json"), MESSAGE_FORMATS, "message_format", context
                ),
                user_claim=choice(
                    raw.get("user_claim", "userid"), USER_CLAIMS, "user_claim", context
                ),
                sas_key_name=str(raw.get("sas_key_name", "dataverse-send")),
                sas_key_env=raw.get("sas_key_env"),
                sas_key_vault=raw.get("sas_key_vault"),
                steps=tuple(steps),
                derive_steps=bool(raw.get("derive_steps", False)),
            )
        )
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: endpoint names must be unique")
    excluded = tuple(str(route) for route in document.get("exclude_routes", []))
    canary = None
    if "canary" in document:
        raw = document["canary"]
        table = str(need(raw, "table", "[canary]")).lower()
        canary = CanarySpec(
            table=table,
            entity_set=str(raw.get("entity_set") or f"{table}s"),
            row_id=str(need(raw, "row", "[canary]")).lower(),
            column=str(raw.get("column", "description")).lower(),
        )
        endpoints = [
            replace(endpoint, steps=(*endpoint.steps, canary.step())) for endpoint in endpoints
        ]
    flows = tuple(
        FlowSpec(
            name=str(need(raw, "name", f"flows[{index}]")),
            connection_reference=raw.get("connection_reference"),
            table=raw.get("table"),
            messages=tuple(raw.get("messages", ("Create", "Update", "Delete"))),
            queue=raw.get("queue"),
            dataverse_connection_reference=raw.get("dataverse_connection_reference"),
            prefix=str(raw.get("prefix", "contoso")),
        )
        for index, raw in enumerate(document.get("flows", []))
    )
    return EnvironmentSpec(
        name, url, document.get("solution"), tuple(endpoints), excluded, canary=canary, flows=flows
    )
