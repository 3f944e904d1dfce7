"""App settings, read once from the environment (Azure app settings or local.settings.json),
and the one place that decides which credential the app uses.

Every setting the code reads is named here, so the infrastructure, local.settings.json.example
and the README can be checked against this list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

DEFAULT_WRITE_TAG = "dataverse-event-consumers"


class SettingsError(ValueError):
    """A setting is missing or malformed; raised at start-up, before any message is taken."""


@dataclass(frozen=True)
class Settings:
    # Dataverse environment URL, e.g. https://contoso.crm.dynamics.com
    dataverse_url: str | None = None
    # Value of the Web API `tag` parameter on our writes; it comes back in SharedVariables["tag"]
    # of the events our own writes raise, which is how the loop guard recognises them.
    write_tag: str = DEFAULT_WRITE_TAG
    # Longest a single Web API call may take, retries and Retry-After waits included. Keep it
    # well under the Service Bus lock duration so a throttled write gives the message back.
    call_budget_seconds: float = 45.0
    # Web API requests in flight per process. Every instance shares one app user's limit of 52.
    max_concurrency: int = 16
    # Requests per 300 s the whole fleet may send as the app user, counted together in the app's
    # table (shared/dataverse/budget.py): 95% of Dataverse's 6,000. 0 turns the count off; it is
    # off with the in-memory store, where there is no table to count in.
    request_budget: int = 5700
    # Client id of a user-assigned managed identity; empty means the system-assigned identity.
    managed_identity_client_id: str | None = None
    # True in Azure (see `running_in_azure`): the fail-closed guards apply.
    in_azure: bool = False
    # Organizations whose events are accepted (ids, unique names or host names).
    allowed_organizations: frozenset[str] = field(default_factory=frozenset)
    # Entra object id of the app user our writes run as; its events are skipped as our own.
    app_user_object_id: str | None = None
    # Log attribute values (off: logs carry identifiers only).
    log_attribute_values: bool = False
    # The app's storage account: a connection string (Azurite locally: UseDevelopmentStorage=true)
    # or, identity-based in Azure, the account name (AzureWebJobsStorage__accountName).
    storage_connection_string: str | None = None
    storage_account_name: str | None = None
    # Blob container for Event Hubs events that could not be processed.
    poison_container: str = "dataverse-poison"
    # Where idempotency claims and ordering watermarks live: "table" (the storage account,
    # shared by every instance; the default in Azure) or "memory" (one process; tests, demo).
    idempotency_store: str = "memory"
    idempotency_table: str = "dataverseidempotency"
    # The environment file (infra/environments/<name>.toml) the health monitor checks.
    environment_name: str | None = None
    # How far back the health monitor looks for failed posts (a little more than its schedule).
    health_lookback_minutes: int = 20
    # The MaxDeliveryCount of the queue or subscription: on that delivery the app dead-letters a
    # message that still needs a retry, with the real reason (infra/main.bicep sets both).
    max_delivery_count: int = 10
    # Trigger entities; a trigger whose setting is empty is not registered.
    queue_name: str | None = None
    topic_name: str | None = None
    subscription_name: str | None = None
    event_hub_name: str | None = None

    def __post_init__(self) -> None:
        # Compared with the lower-case ids Dataverse sends, on every event: normalised once.
        if self.app_user_object_id:
            object.__setattr__(self, "app_user_object_id", self.app_user_object_id.lower())

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            found = env.get(name, "").strip()
            return found or None

        def number(name: str, default: float, *, zero: bool = False) -> float:
            found = text(name)
            if found is None:
                return default
            try:
                value = float(found)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {found!r}") from None
            if value < 0 or (value == 0 and not zero):
                raise SettingsError(f"{name} must be positive, got {found!r}")
            return value

        url = text("DATAVERSE_URL")
        if url is not None and not url.startswith(("https://", "http://")):
            raise SettingsError(f"DATAVERSE_URL must be an https:// URL, got {url!r}")
        organizations = text("ALLOWED_ORGANIZATIONS") or ""
        in_azure = running_in_azure(env)
        return cls(
            dataverse_url=None if url is None else url.rstrip("/"),
            write_tag=text("DATAVERSE_WRITE_TAG") or DEFAULT_WRITE_TAG,
            call_budget_seconds=number("DATAVERSE_CALL_BUDGET_SECONDS", 45.0),
            max_concurrency=int(number("DATAVERSE_MAX_CONCURRENCY", 16)),
            request_budget=int(number("DATAVERSE_REQUEST_BUDGET", 5700, zero=True)),
            managed_identity_client_id=text("AZURE_CLIENT_ID"),
            in_azure=in_azure,
            allowed_organizations=frozenset(
                part.strip().lower() for part in organizations.split(",") if part.strip()
            ),
            app_user_object_id=text("APP_USER_OBJECT_ID"),
            log_attribute_values=(text("LOG_ATTRIBUTE_VALUES") or "").lower()
            in ("1", "true", "yes"),
            storage_connection_string=_connection_string(text("AzureWebJobsStorage")),
            storage_account_name=text("AzureWebJobsStorage__accountName"),
            poison_container=text("POISON_CONTAINER") or "dataverse-poison",
            idempotency_store=_store_kind(text("IDEMPOTENCY_STORE"), in_azure=in_azure),
            idempotency_table=text("IDEMPOTENCY_TABLE") or "dataverseidempotency",
            environment_name=text("DATAVERSE_ENVIRONMENT"),
            health_lookback_minutes=int(number("HEALTH_LOOKBACK_MINUTES", 20)),
            max_delivery_count=int(number("SERVICE_BUS_MAX_DELIVERY_COUNT", 10)),
            queue_name=text("DATAVERSE_QUEUE_NAME"),
            topic_name=text("DATAVERSE_TOPIC_NAME"),
            subscription_name=text("DATAVERSE_SUBSCRIPTION_NAME"),
            event_hub_name=text("DATAVERSE_EVENT_HUB_NAME"),
        )


# Any one of these says "Azure", so each fail-closed guard (table store, allow-list, managed
# identity) holds on every plan: WEBSITE_INSTANCE_ID is set on Premium, Dedicated and Windows
# Consumption but not on Flex Consumption, the plan infra/main.bicep deploys; WEBSITE_OWNER_NAME
# is set on Flex and Linux Consumption too (azure-functions-host#10441); IDENTITY_ENDPOINT
# wherever a managed identity is assigned (ours always is); DATAVERSE_HOSTING is set by our own
# Bicep, so a platform that renames its variables cannot turn the guards off. Core Tools
# (`func start`) sets none of them.
AZURE_MARKERS = (
    "DATAVERSE_HOSTING",
    "WEBSITE_INSTANCE_ID",
    "WEBSITE_OWNER_NAME",
    "IDENTITY_ENDPOINT",
)


def running_in_azure(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in AZURE_MARKERS)


def _store_kind(value: str | None, *, in_azure: bool) -> str:
    kind = (value or ("table" if in_azure else "memory")).lower()
    if kind not in ("table", "memory"):
        raise SettingsError(f"IDEMPOTENCY_STORE must be table or memory, got {value!r}")
    if in_azure and kind == "memory":
        raise SettingsError(
            "IDEMPOTENCY_STORE=memory in Azure would let every instance apply duplicates: use table"
        )
    return kind


def _connection_string(value: str | None) -> str | None:
    # AzureWebJobsStorage holds a connection string; identity-based apps leave it empty and
    # set AzureWebJobsStorage__accountName instead.
    return value if value and "=" in value else None


def make_credential(settings: Settings) -> AsyncTokenCredential:
    """Managed identity in Azure (user-assigned when AZURE_CLIENT_ID is set); the developer
    credential chain (Azure CLI, VS Code, environment...) on a developer's machine, except for
    a Dataverse emulator on loopback, which needs no login."""
    if settings.in_azure:
        from azure.identity.aio import ManagedIdentityCredential

        if settings.managed_identity_client_id:
            return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
        return ManagedIdentityCredential()
    from shared.dataverse.auth import EmulatorCredential, is_loopback

    if settings.dataverse_url and is_loopback(settings.dataverse_url):
        return EmulatorCredential()
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(exclude_managed_identity_credential=True)
