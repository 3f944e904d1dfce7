"""Wires the app together once per process: settings, the discovered handlers, the dispatcher
and the stores. function_app.py holds only triggers; tests and tools build the same runtime."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import observability
from shared.canary import CanaryStore, InMemoryCanaryStore, TableCanaryStore
from shared.dataverse import DataverseClient, create_client
from shared.dispatch import Dispatcher
from shared.events import DataverseEvent
from shared.health import CheckResult, run_checks
from shared.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from shared.poison import BlobPoisonStore, InMemoryPoisonStore, PoisonStore
from shared.routing import Router, discover
from shared.settings import Settings
from shared.storage import blob_service, table_client

logger = logging.getLogger("dataverse.app")


@dataclass
class Runtime:
    settings: Settings
    router: Router
    dispatcher: Dispatcher
    _poison: PoisonStore | None = field(default=None, repr=False)

    @property
    def poison(self) -> PoisonStore:
        if self._poison is None:
            self._poison = make_poison_store(self.settings)
        return self._poison

    async def check_health(self) -> list[CheckResult]:
        from datetime import UTC, datetime, timedelta

        from shared.registration import load_environment
        from shared.steps import with_routes

        assert self.settings.environment_name is not None
        # The routes this runtime already discovered, not a second discovery per health run.
        spec = with_routes(
            load_environment(self.settings.environment_name, handlers=None), self.router.routes
        )
        since = datetime.now(UTC) - timedelta(minutes=self.settings.health_lookback_minutes)
        return await run_checks(
            self.dispatcher.dataverse, spec, since=since, canaries=self.dispatcher.canaries
        )

    def event_hub_batch(self, events: Sequence[Any]) -> tuple[list[DataverseEvent], str | None]:
        """Events of one `cardinality="many"` invocation with their application properties,
        which the host sends in the trigger metadata (`PropertiesArray`), and the partition."""
        metadata: Mapping[str, Any] = (getattr(events[0], "metadata", None) or {}) if events else {}
        properties = metadata.get("PropertiesArray") or []
        partition = None
        partition_context = metadata.get("PartitionContext")
        if isinstance(partition_context, Mapping):
            partition = partition_context.get("PartitionId")
        batch = [
            DataverseEvent.from_event_hub(
                event, properties[index] if index < len(properties) else None
            )
            for index, event in enumerate(events)
        ]
        return batch, None if partition is None else str(partition)


def build(
    settings: Settings | None = None,
    *,
    handlers: str = "handlers",
    dataverse: DataverseClient | None = None,
    idempotency: IdempotencyStore | None = None,
    poison: PoisonStore | None = None,
) -> Runtime:
    settings = settings or Settings.from_environment()
    observability.allow_values(settings.log_attribute_values)
    router = discover(handlers)
    logger.info("%d handler routes from %s", len(router.routes), handlers)
    dispatcher = Dispatcher(
        router,
        dataverse or (lambda: create_client(settings)),
        settings,
        idempotency=idempotency or make_idempotency_store(settings),
        canaries=make_canary_store(settings),
    )
    return Runtime(settings, router, dispatcher, poison)


def make_canary_store(settings: Settings) -> CanaryStore:
    """Beside the idempotency claims: every instance and the health timer share it."""
    if settings.idempotency_store == "memory":
        return InMemoryCanaryStore()
    return TableCanaryStore(table_client(settings, settings.idempotency_table))


def make_idempotency_store(settings: Settings) -> IdempotencyStore:
    if settings.idempotency_store == "memory":
        return InMemoryIdempotencyStore()
    from shared.idempotency_table import TableIdempotencyStore  # loads the Tables SDK

    return TableIdempotencyStore(table_client(settings, settings.idempotency_table))


def make_poison_store(settings: Settings) -> PoisonStore:
    if not (settings.storage_connection_string or settings.storage_account_name):
        logger.warning("no storage account configured: parked events are kept in memory only")
        return InMemoryPoisonStore()
    return BlobPoisonStore(blob_service(settings).get_container_client(settings.poison_container))
