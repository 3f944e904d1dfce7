"""The steps Dataverse needs so that every route receives its events, derived from the routes.

A route names its table, message and stage, the columns whose changes it takes (`attributes`)
and the columns it reads from images (`pre_image`, `post_image`). The derived step for a
(table, message, stage) is the union of its routes' needs:

- filtering attributes: the union of the routes' columns, on Update only (Dataverse applies
  them to Update alone); none when any route takes every change;
- a `PreImage` and a `PostImage` with the union of the columns read (every column when a
  route asks for "*"); none when no route reads one;
- mode asynchronous, stage post-operation unless the route names one.

Routes on "*" (every table or message) need no step of their own: they see what the other
steps post, and are "covered" when at least one step matches them. The environment file
overrides a derived step by declaring the same table, message and stage (each setting it gives
wins, its images replace derived images of the same name, the rest stays derived) and adds
steps of its own; `uncovered()` says which routes its steps would leave without events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from shared.registration import EnvironmentSpec, ImageSpec, SpecError, StepSpec
from shared.routing import ALL_COLUMNS, ANY, POST_IMAGE, PRE_IMAGE, Route
from shared.sdk_names import check_message

DEFAULT_STAGE = 40


def step_key(entity: str, message: str, stage: int) -> tuple[str, str, int]:
    return entity.lower(), message.lower(), stage


def _image(name: str, kind: str, needs: list[frozenset[str]]) -> ImageSpec | None:
    if not needs:
        return None
    if any(need >= ALL_COLUMNS for need in needs):
        return ImageSpec(name=name, type=kind, attributes=())  # no list: every column
    return ImageSpec(name=name, type=kind, attributes=tuple(sorted(frozenset().union(*needs))))


def derive_steps(routes: Iterable[Route]) -> list[StepSpec]:
    """One step per (table, message, stage) of the concrete routes, in registration order."""
    groups: dict[tuple[str, str, int], list[Route]] = {}
    for route in sorted(routes, key=lambda route: route.order):
        if ANY in (route.entity, route.message):
            continue
        key = step_key(route.entity, route.message, route.stage or DEFAULT_STAGE)
        groups.setdefault(key, []).append(route)
    steps = []
    for (entity, message, stage), members in groups.items():
        filtering: tuple[str, ...] = ()
        if message == "update" and all(route.attributes for route in members):
            filtering = tuple(sorted(frozenset().union(*(r.attributes or () for r in members))))
        images = [
            _image(PRE_IMAGE, "pre", [r.pre_image for r in members if r.pre_image is not None]),
            _image(POST_IMAGE, "post", [r.post_image for r in members if r.post_image is not None]),
        ]
        steps.append(
            StepSpec(
                message=check_message(message),
                entity=entity,
                stage=stage,
                filtering_attributes=filtering,
                images=tuple(image for image in images if image is not None),
                source="routes",
                routes=tuple(route.name for route in members),
            )
        )
    return steps


def override(derived: StepSpec, declared: StepSpec) -> StepSpec:
    """The derived step with what the file's step of the same key says: each setting the file
    gives wins, images replace the derived image of the same name, the rest stays derived."""
    settings = {
        name: getattr(declared, name)
        for name in ("stage", "mode", "rank", "filtering_attributes")
        if name in declared.declared
    }
    images = {image.name: image for image in derived.images}
    images.update({image.name: image for image in declared.images})
    return replace(derived, **settings, images=tuple(images.values()), source="routes+file")


def merge_steps(derived: Sequence[StepSpec], declared: Sequence[StepSpec]) -> tuple[StepSpec, ...]:
    """The derived steps, each overridden by the file's step of the same key, then the file's
    other steps."""
    by_key = {
        step_key(step.entity, step.message, step.stage): step
        for step in declared
        if not step.canary  # the canary's own step is never an override
    }
    merged = []
    for step in derived:
        found = by_key.pop(step_key(step.entity, step.message, step.stage), None)
        merged.append(step if found is None else override(step, found))
    extra = [step for step in declared if step.canary or step in by_key.values()]
    return (*merged, *extra)


def _image_columns(step: StepSpec, name: str, kinds: set[str]) -> frozenset[str] | None:
    """The columns of the step's image `name` (ALL_COLUMNS for an image of every column), or
    None when it has no such image."""
    for image in step.images:
        if image.name == name and image.type in kinds:
            return frozenset(image.attributes) if image.attributes else ALL_COLUMNS
    return None


def _gaps(route: Route, step: StepSpec) -> list[str]:
    gaps = []
    if step.message.lower() == "update" and step.filtering_attributes:
        filtering = frozenset(step.filtering_attributes)
        if route.attributes is None:
            gaps.append(
                f"takes every change, but the step posts only changes of {sorted(filtering)}"
            )
        elif missing := route.attributes - filtering:
            gaps.append(f"the step does not post changes of {sorted(missing)}")
    for wanted, name, kinds in (
        (route.pre_image, PRE_IMAGE, {"pre", "both"}),
        (route.post_image, POST_IMAGE, {"post", "both"}),
    ):
        if wanted is None:
            continue
        has = _image_columns(step, name, kinds)
        if has is None:
            gaps.append(f"reads the {name}, which the step does not register")
        elif has != ALL_COLUMNS and (absent := sorted(wanted - has)):
            gaps.append(f"reads {absent} from the {name}, which does not carry them")
    return gaps


def uncovered(routes: Iterable[Route], steps: Sequence[StepSpec]) -> list[str]:
    """One line per route that these steps would leave without events, or with less than it
    reads; empty when every route is covered."""
    problems = []
    for route in routes:
        matching = [
            step
            for step in steps
            if route.entity in (ANY, step.entity)
            and route.message in (ANY, step.message.lower())
            and (route.stage is None or route.stage == step.stage)
        ]
        if not matching:
            problems.append(
                f"{route.name} ({route.entity} {route.message}): no step posts its events"
            )
            continue
        if ANY in (route.entity, route.message):
            continue  # sees whatever the matching steps post
        gaps = [_gaps(route, step) for step in matching]
        if all(gaps):
            problems.append(f"{route.name}: " + "; ".join(gaps[0]))
    return problems


def with_routes(spec: EnvironmentSpec, routes: Iterable[Route]) -> EnvironmentSpec:
    """The environment with the steps its routes need added to the endpoint that takes derived
    steps (`derive_steps = true`, or the only endpoint), the file's steps overriding them."""
    routes = [route for route in routes if route.name not in spec.exclude_routes]
    derived = derive_steps(routes)
    if not derived or not spec.endpoints:
        return spec
    flagged = [endpoint for endpoint in spec.endpoints if endpoint.derive_steps]
    if len(flagged) > 1:
        raise SpecError(f"{spec.name}: only one endpoint may say derive_steps = true")
    if not flagged and len(spec.endpoints) > 1:
        raise SpecError(
            f"{spec.name}: several endpoints, none with derive_steps = true: say which one "
            "posts the steps the routes need"
        )
    target = flagged[0] if flagged else spec.endpoints[0]
    endpoints = tuple(
        replace(endpoint, steps=merge_steps(derived, endpoint.steps))
        if endpoint is target
        else endpoint
        for endpoint in spec.endpoints
    )
    return replace(spec, endpoints=endpoints, routes=tuple(routes))
