"""Routes: which handlers run for an event, by table, message, stage and changed columns.

A handler module declares `router = Router()` and decorates `async def` handlers:

    @router.on(entity="account", message="Create")
    async def open_welcome_task(context, dataverse): ...

`discover(handlers)` imports every module of the package at indexing time and merges their
routers, so a broken handler fails the deployment instead of silently dropping events.
Mistakes fail at import: a handler that is not `async def`, or the same handler registered
twice for the same key.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from shared.context import Entity, RemoteExecutionContext

Handler = Callable[..., Awaitable[None]]
ANY = "*"


@dataclass(frozen=True)
class Route:
    entity: str  # logical name, lower case, or "*"
    message: str  # message name, lower case, or "*"
    stage: int | None
    attributes: frozenset[str] | None  # run only when the Target carries one of these
    handler: Handler
    name: str  # "module.function": the handler's name in logs, idempotency keys, dead letters
    wants_event: bool  # the handler takes (context, dataverse, event)
    ordered: bool  # skip events older than the last one applied to the same row
    order: int  # registration order across all routers

    def accepts_target(self, context: RemoteExecutionContext) -> bool:
        if self.attributes is None:
            return True
        target = context.target
        return isinstance(target, Entity) and not self.attributes.isdisjoint(target.attributes)


_registrations = 0


def _next_order() -> int:
    global _registrations
    _registrations += 1
    return _registrations


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._index: dict[tuple[str, str], list[Route]] = {}
        self._matches: dict[tuple[str, str, int], tuple[Route, ...]] = {}

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes)

    def on(
        self,
        *,
        entity: str = ANY,
        message: str = ANY,
        stage: int | None = None,
        attributes: Iterable[str] | None = None,
        ordered: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a handler; returns it unchanged, so it can be tested by calling it.

        `entity` and `message` match case-insensitively, `"*"` matches anything. `stage`
        (10, 20, 40) narrows to one pipeline stage. `attributes` runs the handler only when the
        Target carries at least one of these columns. `ordered=True` skips an event older than
        the last one applied to the same row (see the Delivery guarantees in the README).
        """
        if isinstance(attributes, str):
            raise TypeError("attributes takes a list of column names, not one string")
        columns = None if attributes is None else frozenset(name.lower() for name in attributes)

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(
                    f"{_name_of(handler)} must be declared `async def`: handlers run on the "
                    "event loop next to the Dataverse client"
                )
            route = Route(
                entity=entity.lower(),
                message=message.lower(),
                stage=stage,
                attributes=columns,
                handler=handler,
                name=_name_of(handler),
                wants_event=_takes_event(handler),
                ordered=ordered,
                order=_next_order(),
            )
            self._add(route)
            return handler

        return register

    def include(self, other: Router) -> None:
        """Take over another router's routes (as `discover` does for each module)."""
        for route in other._routes:
            self._add(route)

    def _add(self, route: Route) -> None:
        for existing in self._routes:
            if (existing.handler, existing.entity, existing.message, existing.stage) == (
                route.handler,
                route.entity,
                route.message,
                route.stage,
            ):
                raise ValueError(
                    f"{route.name} is registered twice for entity={route.entity!r} "
                    f"message={route.message!r} stage={route.stage}"
                )
        self._routes.append(route)
        self._index.setdefault((route.entity, route.message), []).append(route)
        self._matches.clear()

    def match(self, context: RemoteExecutionContext) -> tuple[Route, ...]:
        """The routes for this event's table, message and stage, in registration order (the
        `attributes` filter is left to the caller: it needs the Target decoded)."""
        entity = context.primary_entity_name.lower()
        message = context.message_name.lower()
        stage = context.stage
        key = (entity, message, stage)
        found = self._matches.get(key)
        if found is None:
            candidates = [
                route
                for pair in ((entity, message), (entity, ANY), (ANY, message), (ANY, ANY))
                for route in self._index.get(pair, ())
                if route.stage is None or route.stage == stage
            ]
            found = tuple(sorted(candidates, key=lambda route: route.order))
            if len(self._matches) < 4096:
                self._matches[key] = found
        return found


def _name_of(handler: Callable[..., Any]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def _takes_event(handler: Callable[..., Any]) -> bool:
    parameters = [
        parameter
        for parameter in inspect.signature(handler).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(parameters) not in (2, 3):
        raise TypeError(
            f"{_name_of(handler)} must take (context, dataverse) or (context, dataverse, event)"
        )
    return len(parameters) == 3


def discover(package: ModuleType | str) -> Router:
    """Import every module of `package` (e.g. `handlers`) and merge their routers.

    Each module must define `router = Router()`; an import error or a missing router raises,
    naming the module, so the app fails to index rather than running without a handler."""
    if isinstance(package, str):
        package = importlib.import_module(package)
    merged = Router()
    paths = getattr(package, "__path__", None)
    if paths is None:
        raise TypeError(f"{package.__name__} is not a package")
    for info in sorted(pkgutil.iter_modules(paths), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise ImportError(f"handler module {name} failed to import: {error!r}") from error
        router = getattr(module, "router", None)
        if not isinstance(router, Router):
            raise TypeError(f"{name} must define router = Router()")
        merged.include(router)
    return merged
