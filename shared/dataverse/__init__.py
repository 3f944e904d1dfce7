"""Async Dataverse Web API client over httpx, authenticated with azure-identity."""

from .addressing import RowAddress
from .auth import BearerTokenAuth
from .client import (
    API_PATH,
    MAX_BATCH_REQUESTS,
    Batch,
    BatchResult,
    ChangeSet,
    DataverseClient,
    RequestOptions,
    RetryPolicy,
)
from .factory import create_client

__all__ = [
    "API_PATH",
    "MAX_BATCH_REQUESTS",
    "Batch",
    "BatchResult",
    "BearerTokenAuth",
    "ChangeSet",
    "DataverseClient",
    "RequestOptions",
    "RetryPolicy",
    "RowAddress",
    "create_client",
]
