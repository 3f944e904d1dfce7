"""Routes: which handlers run for an event, by table, message, stage and changed columns.

A handler module declares `router = Router()` and decorates `async def` handlers:

    @router.on(entity="account", message="Create")
    async def open_welcome_task(context, dataverse): ...

`discover(handlers)` imports every module of the package at indexing time and merges their
routers, so a broken handler fails the deployment instead of silently dropping events.
Mistakes fail at import, where Dataverse would only stay silent: a table, message, stage or
column it would never post (checked against shared/sdk_names.py and tables.toml, with a "did you
mean"), a handler that is not `async def` or takes its arguments swapped, a module without a
router, a folder of modules without `__init__.py`, the same handler registered twice.

A route also says which columns it reads from images (`pre_image=["telephone1"]`), so
tools.endpoints can derive the steps and images Dataverse needs to post it (shared/steps.py).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.context import Entity, RemoteExecutionContext
from shared.sdk_names import RouteError, check_message, check_stage, check_table, suggestion
from shared.tables import TableSpec, project_tables

Handler = Callable[..., Awaitable[None]]
ANY = "*"
# pre_image="*" / post_image="*": the image carries every column.
ALL_COLUMNS: frozenset[str] = frozenset({ANY})
PRE_IMAGE = "PreImage"  # the names the derived steps give their images
POST_IMAGE = "PostImage"


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
    pre_image: frozenset[str] | None = None  # columns read from the PreImage; ALL_COLUMNS
    post_image: frozenset[str] | None = None  # columns read from the PostImage
    flows: bool = False  # also takes rows a Power Automate flow publishes (no images, no users)

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
        pre_image: Iterable[str] | str | None = None,
        post_image: Iterable[str] | str | None = None,
        flows: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a handler; returns it unchanged, so it can be tested by calling it.

        `entity` (a table's logical name) and `message` match case-insensitively, `"*"` matches
        anything. `stage` (10, 20, 40) narrows to one pipeline stage. `attributes` runs the
        handler only when the Target carries at least one of these columns (and becomes the
        step's filtering attributes). `pre_image` / `post_image` name the columns the handler
        reads from `context.pre_entity_images["PreImage"]` / `post_entity_images["PostImage"]`
        (`"*"`: every column). `ordered=True` skips an event older than the last one applied
        to the same row (see the Delivery guarantees in the README). `flows=True` also runs
        the handler for rows a Power Automate flow publishes (README, "Low-code publishers");
        off by default, since such an event has no images, tag or user ids to rely on.
        """
        if isinstance(attributes, str):
            raise TypeError("attributes takes a list of column names, not one string")
        tables = project_tables()
        if entity != ANY:
            entity = check_table(entity, frozenset(tables))
        if message != ANY:
            message = check_message(message)
        check_stage(stage)
        spec = tables.get(entity.lower())
        columns = None if attributes is None else _columns(attributes, spec, "attributes")
        before = _image(pre_image, spec, "pre_image")
        after = _image(post_image, spec, "post_image")
        if before is not None and message.lower() == "create":
            raise RouteError("a Create has no pre image: the row did not exist before it")
        if after is not None and message.lower() == "delete":
            raise RouteError("a Delete has no post image: the row is gone after it")
        if flows and (before is not None or after is not None):
            raise RouteError(
                "flows=True with an image: a flow's message carries the row, never an image"
            )

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
                pre_image=before,
                post_image=after,
                flows=flows,
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


def _columns(names: Iterable[str], spec: TableSpec | None, argument: str) -> frozenset[str]:
    """Lower-cased column names, each checked against the table when tables.toml lists its
    columns: `telephone` on contact is refused with "did you mean 'telephone1'?"."""
    columns = frozenset(name.lower() for name in names)
    known = spec.all_columns if spec is not None else None
    if known is not None:
        for column in sorted(columns - known - ALL_COLUMNS):
            raise RouteError(
                f"{argument}: {spec.logical_name} has no column {column!r}"  # type: ignore[union-attr]
                f"{suggestion(column, known)} (tables.toml lists its columns)"
            )
    return columns


def _image(
    names: Iterable[str] | str | None, spec: TableSpec | None, argument: str
) -> frozenset[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        if names != ANY:
            raise TypeError(f'{argument} takes a list of column names, or "*" for every column')
        return ALL_COLUMNS
    return _columns(names, spec, argument)


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
    # Annotations are strings under `from __future__ import annotations`: read them as text.
    first, second = (str(parameter.annotation) for parameter in parameters[:2])
    if "DataverseClient" in first or "RemoteExecutionContext" in second:
        raise TypeError(
            f"{_name_of(handler)} takes its arguments swapped: the order is "
            "(context: RemoteExecutionContext, dataverse: DataverseClient)"
        )
    return len(parameters) == 3


def discover(package: ModuleType | str) -> Router:
    """Import every module of `package` (e.g. `handlers`), sub-packages included, and merge
    their routers.

    Each module must define `router = Router()`; modules and packages whose names start with
    `_` are helpers and are skipped. An import error, a missing router or a folder of modules
    without `__init__.py` (which Python would import as nothing) raises, naming the module, so
    the app fails to index rather than running without a handler."""
    if isinstance(package, str):
        package = importlib.import_module(package)
    paths = getattr(package, "__path__", None)
    if paths is None:
        raise TypeError(f"{package.__name__} is not a package")
    merged = Router()
    _discover_into(merged, package.__name__, list(paths))
    return merged


def _discover_into(merged: Router, package: str, paths: list[str]) -> None:
    for folder in paths:
        for child in sorted(Path(folder).iterdir()):
            if (
                child.is_dir()
                and not child.name.startswith(("_", "."))
                and not (child / "__init__.py").exists()
                and any(child.glob("*.py"))
            ):
                raise TypeError(
                    f"{child} holds handler modules but no __init__.py, so they would never be "
                    "imported: add an empty __init__.py (or start the folder's name with _)"
                )
    for info in sorted(pkgutil.iter_modules(paths), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise ImportError(f"handler module {name} failed to import: {error!r}") from error
        if info.ispkg:
            _discover_into(merged, name, list(module.__path__))
            continue
        router = getattr(module, "router", None)
        if not isinstance(router, Router):
            raise TypeError(
                f"{name} must define router = Router(); a helper module's name starts with _ "
                f"(e.g. {package.replace('.', '/')}/_{info.name}.py) and is not discovered"
            )
        merged.include(router)
