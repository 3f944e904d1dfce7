"""`RemoteExecutionContext`: the plug-in execution context Dataverse posts, in Python names.

Every member is decoded on first access and cached: the dispatcher reads a handful of header
members, most handlers a few columns of the Target, and decoding what nobody reads would cost
more than parsing the JSON itself (a GUID alone costs more than a kilobyte of orjson).
`parse_context` checks the shape at once; `validate()` decodes everything. A value that cannot be
decoded raises `InvalidMessage` whenever it is decoded, and the dispatcher dead-letters it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.errors import InvalidMessage
from shared.lazy import cached

from . import values
from .types import Entity, EntityReference

# Dataverse caps plug-in depth at 8; parents nest one level per depth. Anything deeper is hostile.
MAX_PARENTS = 32
_DOTNET_MIN_DATE = datetime(1, 1, 1, tzinfo=UTC)
_REQUIRED = ("MessageName", "PrimaryEntityName", "OrganizationId")

T = TypeVar("T")

# What a malformed tree makes the converters raise; InvalidMessage passes through unchanged.
DECODE_ERRORS = (KeyError, TypeError, AttributeError, ValueError)


def unreadable(member: str, error: Exception) -> InvalidMessage:
    """The one wording of a decoding failure, whatever member it struck."""
    return InvalidMessage(
        "InvalidValue", f"{member} cannot be read: {type(error).__name__} {error}"
    )


class _Member(cached[T]):
    """A header member, converted on first read and then cached like any `cached` property;
    absent means .NET's default."""

    __slots__ = ("convert", "default", "member")

    def __init__(self, member: str, convert: Callable[[Any], T], default: T) -> None:
        super().__init__(self._read)
        self.member = member
        self.convert = convert
        self.default = default

    def _read(self, context: RemoteExecutionContext) -> T:
        return self.load(context._header)

    def load(self, header: Mapping[str, Any]) -> T:
        raw = header.get(self.member)
        if raw is None:
            return self.default
        try:
            return self.convert(raw)
        except DECODE_ERRORS as error:
            raise unreadable(self.member, error) from None


def _optional_entity_reference(raw: Any) -> EntityReference | None:
    return values.entity_reference(raw)


_LAZY = (
    "input_parameters",
    "output_parameters",
    "shared_variables",
    "pre_entity_images",
    "post_entity_images",
    "parent_context",
)


class RemoteExecutionContext:
    """Mirrors `Microsoft.Xrm.Sdk.RemoteExecutionContext`; build it with `parse_context()`."""

    # No __slots__: decoded members are cached in the instance __dict__ (see _Member).

    message_name = _Member("MessageName", values.to_str, "")
    primary_entity_name = _Member("PrimaryEntityName", values.to_str, "")
    primary_entity_id = _Member("PrimaryEntityId", values.to_uuid, values.EMPTY_GUID)
    secondary_entity_name = _Member("SecondaryEntityName", values.to_optional_str, None)
    stage = _Member("Stage", values.to_int, 0)
    mode = _Member("Mode", values.to_int, 0)
    depth = _Member("Depth", values.to_int, 0)
    isolation_mode = _Member("IsolationMode", values.to_int, 0)
    is_in_transaction = _Member("IsInTransaction", values.to_bool, False)
    is_executing_offline = _Member("IsExecutingOffline", values.to_bool, False)
    is_offline_playback = _Member("IsOfflinePlayback", values.to_bool, False)
    correlation_id = _Member("CorrelationId", values.to_uuid, values.EMPTY_GUID)
    operation_id = _Member("OperationId", values.to_uuid, values.EMPTY_GUID)
    request_id = _Member("RequestId", values.to_optional_uuid, None)
    operation_created_on = _Member("OperationCreatedOn", values.to_datetime, _DOTNET_MIN_DATE)
    organization_id = _Member("OrganizationId", values.to_uuid, values.EMPTY_GUID)
    organization_name = _Member("OrganizationName", values.to_str, "")
    user_id = _Member("UserId", values.to_uuid, values.EMPTY_GUID)
    initiating_user_id = _Member("InitiatingUserId", values.to_uuid, values.EMPTY_GUID)
    business_unit_id = _Member("BusinessUnitId", values.to_uuid, values.EMPTY_GUID)
    initiating_user_azure_active_directory_object_id = _Member(
        "InitiatingUserAzureActiveDirectoryObjectId", values.to_optional_uuid, None
    )
    user_azure_active_directory_object_id = _Member(
        "UserAzureActiveDirectoryObjectId", values.to_optional_uuid, None
    )
    initiating_user_agent = _Member("InitiatingUserAgent", values.to_optional_str, None)
    owning_extension: _Member[EntityReference | None] = _Member(
        "OwningExtension", _optional_entity_reference, None
    )

    def __init__(
        self,
        tree: Mapping[str, Any],
        parents: int = 0,
        resolve: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """`tree` is a reader's neutral tree. `resolve`, when given, returns the tree to read
        collections from (the JSON reader's exact-decimal tree, computed only if needed)."""
        if type(tree) is not dict and not isinstance(tree, Mapping):
            raise InvalidMessage(
                "NotAnExecutionContext",
                f"expected an object with the context's members, got {type(tree).__name__}",
            )
        missing = [member for member in _REQUIRED if tree.get(member) is None]
        if missing:
            raise InvalidMessage(
                "NotAnExecutionContext",
                f"members {', '.join(missing)} are missing: this is not a Dataverse execution "
                "context (was the service endpoint posting something else?)",
            )
        if parents > MAX_PARENTS:
            raise InvalidMessage("TooDeep", f"more than {MAX_PARENTS} nested parent contexts")
        self._header = tree
        self._members = tree
        self._resolve = resolve
        self._parents = parents

    def raw(self, member: str) -> Any:
        """A header member as sent, not decoded (`context.raw("OperationId")` is the GUID's
        text): for logs and keys, where decoding would cost more than it gives."""
        return self._header.get(member)

    # --- collections, decoded on first access ------------------------------------------------

    def _decode(self, member: str, convert: Callable[[Any, int], Any]) -> Any:
        try:
            if self._resolve is None:
                return convert(self._members.get(member), 0)
            # JSON: decode from the fast tree unless a double turns up, and only then check
            # whether the body needs the exact tree (most messages carry no fraction at all).
            token = values.floats_checked.set(False)
            try:
                return convert(self._members.get(member), 0)
            except values.FloatNeedsCheck:
                pass
            finally:
                values.floats_checked.reset(token)
            self._members = self._resolve()
            self._resolve = None
            return convert(self._members.get(member), 0)
        except DECODE_ERRORS as error:
            raise unreadable(member, error) from None

    @cached
    def input_parameters(self) -> Mapping[str, Any]:
        return self._decode("InputParameters", values.pairs)  # type: ignore[no-any-return]

    @cached
    def output_parameters(self) -> Mapping[str, Any]:
        return self._decode("OutputParameters", values.pairs)  # type: ignore[no-any-return]

    @cached
    def shared_variables(self) -> Mapping[str, Any]:
        return self._decode("SharedVariables", values.pairs)  # type: ignore[no-any-return]

    @cached
    def pre_entity_images(self) -> Mapping[str, Entity]:
        return self._decode("PreEntityImages", _images)  # type: ignore[no-any-return]

    @cached
    def post_entity_images(self) -> Mapping[str, Entity]:
        return self._decode("PostEntityImages", _images)  # type: ignore[no-any-return]

    @cached
    def parent_context(self) -> RemoteExecutionContext | None:
        raw = self._header.get("ParentContext")
        if raw is None or raw == "":
            return None
        # The parent reads its collections from the same tree as this context: the exact one
        # once this context switched to it, or whatever this context will resolve to.
        resolve: Callable[[], Mapping[str, Any]] | None = None
        if self._resolve is not None:
            outer = self._resolve
            resolve = lambda: outer()["ParentContext"]  # noqa: E731
        elif self._members is not self._header:
            exact = self._members
            resolve = lambda: exact["ParentContext"]  # noqa: E731
        return RemoteExecutionContext(raw, self._parents + 1, resolve)

    @property
    def target(self) -> Entity | EntityReference | None:
        """The `Target` input parameter: an Entity (Create, Update), an EntityReference
        (Delete, Associate, Assign...) or None (unbound actions, truncated messages)."""
        target = self.input_parameters.get("Target")
        return target if isinstance(target, Entity | EntityReference) else None

    def validate(self) -> RemoteExecutionContext:
        """Decode every member, collection and parent now; raises `InvalidMessage` if any fails."""
        context: RemoteExecutionContext | None = self
        while context is not None:
            decoded = context.__dict__
            for member in _MEMBERS:
                if member.name not in decoded:
                    decoded[member.name] = member.load(context._header)
            for name in _LAZY:
                getattr(context, name)
            context = context.parent_context
        return self

    # --- comparison and display ---------------------------------------------------------------

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteExecutionContext):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Identifiers only: attribute values never reach logs through a repr.
        return (
            f"RemoteExecutionContext(message_name={self.message_name!r}, "
            f"primary_entity_name={self.primary_entity_name!r}, "
            f"primary_entity_id={str(self.primary_entity_id)!r}, stage={self.stage}, "
            f"operation_id={str(self.operation_id)!r})"
        )


_MEMBERS: tuple[_Member[Any], ...] = tuple(
    member for member in vars(RemoteExecutionContext).values() if isinstance(member, _Member)
)
_FIELDS = (*(member.name for member in _MEMBERS), *_LAZY)


def _images(raw: object, nesting: int) -> dict[str, Entity]:
    if not raw:
        return {}
    if type(raw) is not list:
        raise values.invalid("image collection", raw)
    return {values.to_str(item["key"]): values.entity(item["value"], nesting + 1) for item in raw}


def from_tree(
    tree: Any, resolve: Callable[[], Mapping[str, Any]] | None = None
) -> RemoteExecutionContext:
    """Build a context from a reader's neutral tree; only `InvalidMessage` escapes."""
    try:
        return RemoteExecutionContext(tree, 0, resolve)
    except DECODE_ERRORS as error:
        raise unreadable("the context header", error) from None
