"""The handler author's whole API."""

from shared.context import (
    AliasedValue,
    BooleanManagedProperty,
    Entity,
    EntityCollection,
    EntityReference,
    EntityReferenceCollection,
    Money,
    OptionSetValue,
    Relationship,
    RemoteExecutionContext,
    parse_context,
)
from shared.dataverse import DataverseClient, RequestOptions
from shared.errors import DataverseError, InvalidMessage, PermanentError, TransientError
from shared.events import DataverseEvent
from shared.routing import Router

__all__ = [
    "AliasedValue",
    "BooleanManagedProperty",
    "DataverseClient",
    "DataverseError",
    "DataverseEvent",
    "Entity",
    "EntityCollection",
    "EntityReference",
    "EntityReferenceCollection",
    "InvalidMessage",
    "Money",
    "OptionSetValue",
    "PermanentError",
    "Relationship",
    "RemoteExecutionContext",
    "RequestOptions",
    "Router",
    "TransientError",
    "parse_context",
]
