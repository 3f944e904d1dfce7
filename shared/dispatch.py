"""`Dispatcher.process(event) -> Outcome`: the one place where decisions are made.

    decode        unreadable body                         -> DeadLetter(<InvalidMessage reason>)
    origin        body's organization not allowed, or its claim -> DeadLetter("UnknownOrganization")
                  no claim where Dataverse always sets one      -> DeadLetter("MissingClaims")
    loop guard    initiated by our application user       -> Skipped("OwnChange")
    route         no handler for table/message/stage      -> Completed (logged)
                  a flow's row, and no route takes flows  -> Completed (logged)
    per handler   claimed and completed already           -> (skipped: "Duplicate")
                  ordered route, behind the row's watermark -> (skipped: "Stale")
                  claimed by another delivery             -> Retry("InProgress")
                  ok                                      -> Completed
                  TransientError, retryable Dataverse errors (401 and 429 by name),
                  timeouts, unknown bugs                                  -> Retry
                  PermanentError, other Dataverse 4xx, InvalidMessage                -> DeadLetter

Triggers only translate: a transport message into a `DataverseEvent`, an `Outcome` into
settlement. Handlers run in registration order; the first failure stops the event, and a
redelivery runs only the handlers that did not complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from shared import metrics, tracing
from shared.canary import FLOW_PATH, CanaryStore, Mark, canary_nonce, flow_canary_nonce
from shared.context import Entity, RemoteExecutionContext
from shared.context.flow import PUBLISHER as FLOW_PUBLISHER
from shared.dataverse import DataverseClient
from shared.deadlines import Deadlines
from shared.errors import (
    DataverseError,
    InvalidMessage,
    PermanentError,
    Throttled,
    TransientError,
    Unauthorized,
)
from shared.events import DataverseEvent
from shared.idempotency import (
    Claim,
    ClaimState,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    LostClaim,
    event_key,
    position_of,
    record_key,
)
from shared.observability import SCOPE, EventScope
from shared.redaction import printable as _printable
from shared.routing import Route, Router
from shared.settings import Settings, SettingsError

logger = logging.getLogger("dataverse.dispatch")

# Service Bus keeps dead-letter descriptions to 4096 characters; keep them readable anyway.
MAX_DESCRIPTION = 1024
# A handler may run for this share of its claim's lease, so it always ends (or is cancelled)
# before another delivery can take the claim over: 240 s of the 300 s lease.
HANDLER_SHARE_OF_LEASE = 0.8
# Writes of a completion to the store, before the event is handed back for a redelivery.
COMPLETE_ATTEMPTS = 3
UNAUTHORIZED_HELP = (
    "Dataverse answered 401 to a fresh token. Check that the environment has an application "
    "user for this app's managed identity (its client id), that it is enabled and has a "
    "security role, and that DATAVERSE_URL is the environment's URL (the token's audience)"
)


@dataclass(frozen=True)
class Completed:
    handlers: tuple[str, ...] = ()  # the handlers that ran (not those skipped as duplicates)


@dataclass(frozen=True)
class Skipped:
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Retry:
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    description: str


Outcome: TypeAlias = Completed | Skipped | Retry | DeadLetter


@dataclass
class DispatchStats:
    """Counters for the health of one process; read by tests and benchmarks."""

    outcomes: dict[str, int] = field(default_factory=dict)
    handler_runs: int = 0

    def count(self, outcome: Outcome) -> None:
        name = type(outcome).__name__
        self.outcomes[name] = self.outcomes.get(name, 0) + 1


@dataclass(frozen=True)
class Canary:
    """A canary event, recognised before any guard or handler (shared/canary.py)."""

    path: str
    nonce: str


class Dispatcher:
    def __init__(
        self,
        router: Router,
        dataverse: DataverseClient | Callable[[], DataverseClient],
        settings: Settings,
        *,
        idempotency: IdempotencyStore | None = None,
        claim_wait_seconds: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        deadlines: Deadlines | None = None,
        canaries: CanaryStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`dataverse` may be a factory: the client is built on the first event that needs
        one, so indexing and tests without DATAVERSE_URL still work."""
        if not settings.allowed_organizations:
            if settings.in_azure:
                raise SettingsError(
                    "ALLOWED_ORGANIZATIONS is empty: in Azure the app accepts events only from "
                    "organizations it names (ids, unique names or host names, comma separated)"
                )
            logger.warning(
                "ALLOWED_ORGANIZATIONS is empty: accepting events from any organization "
                "(allowed only outside Azure)"
            )
        if not settings.app_user_object_id and settings.in_azure:
            logger.warning(
                "APP_USER_OBJECT_ID is empty: the loop guard is off, so the app's own writes "
                "come back as events (set it to the managed identity's object id)"
            )
        self.router = router
        self.settings = settings
        self.idempotency: IdempotencyStore = idempotency or InMemoryIdempotencyStore()
        self.stats = DispatchStats()
        self.claim_wait_seconds = claim_wait_seconds
        self._deadlines = deadlines or Deadlines()
        self._dataverse = dataverse
        self._sleep = sleep
        self.canaries = canaries
        self._clock = clock

    @property
    def dataverse(self) -> DataverseClient:
        if not isinstance(self._dataverse, DataverseClient):
            self._dataverse = self._dataverse()
        return self._dataverse

    async def process(self, event: DataverseEvent) -> Outcome:
        scope = EventScope(event.message_id)
        token = SCOPE.set(scope)
        try:
            with (
                tracing.event_span(
                    event.transport, event.message_id, event.delivery_count, event.properties
                )
                if tracing.enabled()
                else tracing.NO_SPAN
            ) as span:
                decided = self._admit(event, scope)
                if isinstance(decided, tuple):
                    outcome = await self._run(event, *decided, scope)
                elif isinstance(decided, Canary):
                    outcome = await self._arrived(decided)
                else:
                    outcome = decided
                if span is not None:
                    if scope.context is not None:
                        tracing.describe_context(span, scope.context)
                    tracing.record_outcome(span, outcome)
        finally:
            SCOPE.reset(token)
        self.stats.count(outcome)
        metrics.event_done(outcome, scope.context, event.transport)
        return outcome

    async def _arrived(self, canary: Canary) -> Outcome:
        """Record a canary's arrival for the health run; a failed write is retried with the
        message, so an arrival is never lost to a storage hiccup."""
        if self.canaries is not None:
            try:
                await self.canaries.arrived(canary.path, Mark(canary.nonce, self._clock()))
            except Exception as error:
                return Retry("StoreUnavailable", f"could not record the canary: {error!r}")
        return Skipped("Canary", f"canary {canary.nonce} through {_printable(canary.path)}")

    def _admit(
        self, event: DataverseEvent, scope: EventScope
    ) -> Outcome | Canary | tuple[RemoteExecutionContext, tuple[Route, ...]]:
        """Decode, guard and route: the outcome when no handler is to run, else the context
        and its routes. Synchronous on purpose: most events of a busy queue end here."""
        try:
            context = event.context
            routes = self.router.match(context)
            scope.context = context
            if context.raw("Publisher") != FLOW_PUBLISHER:
                refused = self._check_origin(event, context) or self._check_loop(context)
            else:  # a cloud flow's row: its own origin rule, and only routes that take flows
                routes = tuple(route for route in routes if route.flows)
                refused = self._check_flow_origin(context) or self._flow_canary(context)
        except InvalidMessage as error:
            logger.warning("dead-lettering an unreadable message: %s", error.reason)
            return DeadLetter(error.reason, _clip(error.message))
        if isinstance(refused, Canary):
            return refused
        if refused is not None:
            logger.info("event %s: %s", type(refused).__name__.lower(), refused.reason)
            return refused
        if not routes:
            logger.info(
                "no handler for %s of %s",
                _printable(context.message_name),
                _printable(context.primary_entity_name),
            )
            return Completed()
        return context, routes

    # --- guards -----------------------------------------------------------------------------------

    def _check_origin(
        self, event: DataverseEvent, context: RemoteExecutionContext
    ) -> DeadLetter | None:
        """The rule: the body's organization (its id or unique name) must be listed; on a
        transport where Dataverse always sets the Organization claim, the claim must be there;
        and a claim, where the list names hosts, must be listed too. One of them sufficing let
        our claim carry a foreign body, and a message without claims pass on its body alone."""
        allowed = self.settings.allowed_organizations
        if not allowed:
            return None
        claimed = event.claims.organization
        body_id = str(context.raw("OrganizationId") or "").lower()
        if body_id not in allowed and context.organization_name.lower() not in allowed:
            problem = "is not in ALLOWED_ORGANIZATIONS (by id or unique name)"
        elif claimed is None and event.transport in CLAIMED_TRANSPORTS:
            return DeadLetter(
                "MissingClaims",
                "the message has no Organization claim, which Dataverse sets on everything it "
                f"posts to {event.transport}: it was sent by something else with this queue's "
                "send rights (find who holds the SAS rule)",
            )
        elif claimed is not None and _names_hosts(allowed) and _host(claimed) not in allowed:
            problem = "came with an Organization claim that is not in ALLOWED_ORGANIZATIONS"
        else:
            return None
        return DeadLetter(
            "UnknownOrganization",
            _clip(
                f"organization {_printable(context.organization_name)!r} ({body_id}, claim "
                f"{_printable(claimed or '')!r}) {problem}; if it is yours, add its id and "
                "host name there, otherwise find who registered a service endpoint to this queue"
            ),
        )

    def _check_flow_origin(self, context: RemoteExecutionContext) -> DeadLetter | None:
        """A flow's message has no Dataverse claims: its DataverseOrganization property (the
        environment's host) must be listed. Like a claim, only a holder of send rights sets it."""
        allowed = self.settings.allowed_organizations
        if not allowed:
            return None
        host = context.organization_name
        if host and host in allowed:
            return None
        return DeadLetter(
            "UnknownOrganization",
            _clip(
                f"a flow's row from {_printable(host)!r}: its DataverseOrganization property "
                "(the environment's host name) is missing or not in ALLOWED_ORGANIZATIONS; set "
                "it in the flow's Send message action (README, 'Low-code publishers')"
            ),
        )

    def _check_loop(self, context: RemoteExecutionContext) -> Skipped | Canary | None:
        """Our own change: initiated by this app's application user. The write tag alone never
        skips: any caller can set `tag` on a Web API call, so a person's tagged change would
        be hidden from every handler. The initiating user is set by Dataverse, not the caller."""
        app_user = self.settings.app_user_object_id
        if not app_user:
            return None
        initiator = context.raw("InitiatingUserAzureActiveDirectoryObjectId")
        if not (isinstance(initiator, str) and initiator.lower() == app_user):
            return None
        shared = context.raw("SharedVariables")
        nonce = canary_nonce(shared)
        if nonce is not None:
            step = context.raw("OwningExtension")
            path = str(step.get("Name") or step.get("Id")) if isinstance(step, dict) else "?"
            return Canary(path, nonce)
        tag = self.settings.write_tag
        tagged = bool(tag) and _carries_tag(
            context.raw("SharedVariables"), context.raw("ParentContext"), tag
        )
        return Skipped(
            "OwnChange",
            "initiated by this app's application user" + (f" (tag {tag!r})" if tagged else ""),
        )

    @staticmethod
    def _flow_canary(context: RemoteExecutionContext) -> Canary | None:
        """A flow's row carries no user ids to tell the app's own change by (say so in the
        flow's trigger instead); its canary is told by the canary column's value."""
        target = context.target
        if not isinstance(target, Entity) or context.message_name != "Update":
            return None
        nonce = flow_canary_nonce(target.attributes)
        if nonce is None:
            return None
        return Canary(FLOW_PATH + str(context.raw("FlowName") or "?"), nonce)

    # --- handlers --------------------------------------------------------------------------------

    async def _run(
        self,
        event: DataverseEvent,
        context: RemoteExecutionContext,
        routes: tuple[Route, ...],
        scope: EventScope,
    ) -> Outcome:
        ran: list[str] = []
        applicable = stale = 0
        try:
            key = event_key(event)
        except InvalidMessage as error:
            return DeadLetter(error.reason, _clip(error.message))
        for route in routes:
            scope.handler = route.name
            try:
                # A truncated message has no Target to filter on: its handlers re-read.
                if (
                    route.attributes is not None
                    and not event.truncated
                    and not route.accepts_target(context)
                ):
                    continue
            except InvalidMessage as error:
                return DeadLetter(error.reason, _clip(f"{route.name}: {error.message}"))
            applicable += 1
            handler_key = f"{key}|{route.name}"
            try:
                claim = await self._claim(route, context, handler_key)
                if claim.state is ClaimState.IN_PROGRESS:
                    claim = await self._await_release(route, context, handler_key)
            except InvalidMessage as error:
                return DeadLetter(error.reason, _clip(f"{route.name}: {error.message}"))
            except Exception as error:  # the store is unreachable or refused us
                logger.warning("%s: claiming failed: %s", route.name, error)
                return Retry(
                    "StoreUnavailable",
                    _clip(f"{route.name}: claiming failed: {type(error).__name__}: {error}"),
                )
            if claim.state is ClaimState.COMPLETED:
                logger.info("duplicate delivery: %s already applied", route.name)
                continue
            if claim.state is ClaimState.STALE:
                logger.info("stale event: %s already applied a newer change of the row", route.name)
                stale += 1
                continue
            if claim.state is ClaimState.IN_PROGRESS:
                return Retry("InProgress", f"{route.name} is running in another delivery")
            failure = await self._call(route, event, context)
            if failure is not None:
                await self._release(claim, route)
                return failure
            try:
                try:
                    await self.idempotency.complete(claim)
                except LostClaim:
                    raise
                except Exception:
                    await self._complete_again(claim)  # a passing store error: try again
            except LostClaim:
                if route.ordered:
                    # Another delivery may have applied a newer change of the row meanwhile:
                    # never report this run as done; the redelivery meets the watermark.
                    logger.error("lease of ordered %s was lost while it ran", route.name)
                    return Retry("LeaseLost", f"{route.name} outlived its claim on the row")
                # Both runs happened, which is what handlers' upserts and absolute values absorb.
                logger.warning("lease of %s expired while it ran", route.name)
            except Exception as error:
                logger.error("%s: recording the completion failed: %s", route.name, error)
                return Retry(
                    "StoreUnavailable",
                    _clip(
                        f"{route.name} applied the event, but its completion could not be "
                        f"recorded ({type(error).__name__}: {error}); a redelivery runs it again"
                    ),
                )
            ran.append(route.name)
        scope.handler = None
        if not applicable:
            return Skipped("NoChangedColumns", "no handler's columns are in the Target")
        if not ran and stale:
            return Skipped("Stale", "a newer change of the row was already applied")
        if not ran:
            return Skipped("Duplicate", "every handler had already applied this event")
        return Completed(tuple(ran))

    def _claim(self, route: Route, context: RemoteExecutionContext, key: str) -> Awaitable[Claim]:
        """Claim (event, handler), or (row, handler) for an ordered route. A plain function
        returning the store's awaitable: no coroutine of its own on the per-handler path."""
        if route.ordered:
            return self.idempotency.claim_in_order(
                record_key(context), route.name, position_of(context)
            )
        return self.idempotency.claim(key)

    async def _complete_again(self, claim: Claim) -> None:
        """Record the completion after a first attempt failed, a few more times (the handler's
        effect is already applied; a redelivery would run it again). Raises the last error."""
        for attempt in range(1, COMPLETE_ATTEMPTS):
            await self._sleep(0.2 * 2 ** (attempt - 1))
            try:
                await self.idempotency.complete(claim)
                return
            except LostClaim:
                raise
            except Exception:
                if attempt + 1 == COMPLETE_ATTEMPTS:
                    raise

    async def _release(self, claim: Claim, route: Route) -> None:
        """Give the claim up after a failure; if the store refuses, its lease ends it anyway."""
        try:
            await self.idempotency.release(claim)
        except Exception as error:
            logger.warning(
                "%s: releasing the claim failed (its lease ends it): %s", route.name, error
            )

    @property
    def handler_budget_seconds(self) -> float:
        return self.idempotency.lease_seconds * HANDLER_SHARE_OF_LEASE

    async def _await_release(
        self, route: Route, context: RemoteExecutionContext, key: str
    ) -> Claim:
        """A claim held by another delivery is usually released within moments (another
        instance is running the handler, or the row's previous event): wait a little before
        handing the message back, so contention does not burn through the broker's delivery
        count."""
        waited, delay = 0.0, 0.02
        while True:
            await self._sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.5)
            claim = await self._claim(route, context, key)
            if claim.state is not ClaimState.IN_PROGRESS or waited >= self.claim_wait_seconds:
                metrics.claim_waited(waited, claim.state.name.lower())
                return claim

    async def _call(
        self, route: Route, event: DataverseEvent, context: RemoteExecutionContext
    ) -> Outcome | None:
        self.stats.handler_runs += 1
        budget = self.idempotency.lease_seconds * HANDLER_SHARE_OF_LEASE
        task = self._deadlines.start(budget)
        timed = metrics.enabled()
        started = time.perf_counter() if timed else 0.0
        try:
            args = (
                (context, self.dataverse, event) if route.wants_event else (context, self.dataverse)
            )
            with tracing.handler_span(route.name):  # a nullcontext without a provider
                await route.handler(*args)
            if timed:
                metrics.handler_ran(route.name, time.perf_counter() - started)
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            logger.warning("%s ran out of its %.0f s and was cancelled", route.name, budget)
            return Retry(
                "HandlerTimeout",
                f"{route.name} ran longer than {budget:.0f} s, the part of its claim's lease a "
                "handler may use; it was cancelled before another delivery could take the "
                "claim over",
            )
        except TimeoutError as error:
            return Retry("Timeout", _clip(f"{route.name}: timed out {error}"))
        except Unauthorized:
            logger.error("%s: Dataverse refused the app's token (HTTP 401)", route.name)
            return Retry("Unauthorized", f"{route.name}: {UNAUTHORIZED_HELP}")
        except DataverseError as error:
            if error.retryable:
                logger.warning("%s: Dataverse asked to retry: %s", route.name, error)
                reason = "Throttled" if isinstance(error, Throttled) else "DataverseUnavailable"
                return Retry(reason, _clip(f"{route.name}: {error}"))
            logger.error("%s: Dataverse refused: %s", route.name, error)
            return DeadLetter("DataverseRejected", _clip(f"{route.name}: {error}"))
        except InvalidMessage as error:
            return DeadLetter(error.reason, _clip(f"{route.name}: {error.message}"))
        except PermanentError as error:
            logger.error("%s gave up on the event: %s", route.name, error)
            return DeadLetter("HandlerRejected", _clip(f"{route.name}: {error}"))
        except TransientError as error:
            logger.warning("%s asked for a retry: %s", route.name, error)
            return Retry("TransientError", _clip(f"{route.name}: {error}"))
        except Exception as error:
            # An unknown bug may be transient (a race, a dependency); the broker's delivery
            # limit turns a persistent one into a dead letter.
            logger.exception("%s failed", route.name)
            return Retry(
                "HandlerError", _clip(f"{route.name} raised {type(error).__name__}: {error}")
            )
        finally:
            self._deadlines.stop(task)
        return None


def _carries_tag(shared: object, parent: object, tag: str) -> bool:
    """Whether SharedVariables["tag"] of the context or of a parent is our tag, read from the
    undecoded members (the tag is a plain string; decoding the rest would be wasted)."""
    for _ in range(64):  # bounded: parents are few, a hostile body may nest many
        if isinstance(shared, list):
            for item in shared:
                if isinstance(item, dict) and item.get("key") == "tag" and item.get("value") == tag:
                    return True
        if not isinstance(parent, dict):
            return False
        shared, parent = parent.get("SharedVariables"), parent.get("ParentContext")
    return False


CLAIMED_TRANSPORTS = frozenset({"servicebus", "eventhub"})


def _names_hosts(allowed: frozenset[str]) -> bool:
    return any("." in entry for entry in allowed)


def _host(organization: str) -> str:
    """`https://contoso.crm.dynamics.com/` -> `contoso.crm.dynamics.com`."""
    text = organization.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."
