"""Reading Dataverse's answers: JSON bodies, error bodies into classified `DataverseError`s,
`Retry-After`, and what the client may send as JSON."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx
import orjson

from shared.errors import (
    DataverseError,
    InvalidResponse,
    NotFound,
    PreconditionFailed,
    Throttled,
    Unauthorized,
)

from .multipart import header


def json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        loaded = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise invalid_response(response, "a body that is not JSON") from None
    if not isinstance(loaded, dict):
        raise invalid_response(response, f"a JSON {type(loaded).__name__}, not an object")
    return loaded


def invalid_response(response: httpx.Response, what: str) -> InvalidResponse:
    kind = response.headers.get("Content-Type", "no content type").split(";", 1)[0]
    return InvalidResponse(
        response.status_code,
        "InvalidResponse",
        f"Dataverse answered {response.status_code} with {what} ({kind}, "
        f"{len(response.content)} bytes)",
        retryable=True,
        request_id=response.headers.get("x-ms-service-request-id"),
        method=response.request.method,
        url=response.request.url.path,
    )


def json_default(value: Any) -> Any:
    from datetime import datetime
    from decimal import Decimal

    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Dataverse")


# Retry-After is clamped to this range: `inf` paused the process until a restart, `-1` or `0`
# sent the next request at once. The ceiling is the Service Bus lock duration, so a message
# handed back for a pause never returns before the pause is over.
RETRY_AFTER_MIN_SECONDS = 1.0
RETRY_AFTER_MAX_SECONDS = 300.0


def error_code(response: httpx.Response) -> str | None:
    """Dataverse's error code of a failed response, for its span (None for a success)."""
    if response.status_code < 400:
        return None
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait: `Retry-After` as seconds or an HTTP date, else 2^attempt; clamped."""
    raw = response.headers.get("Retry-After")
    wait = float(2**attempt)
    if raw:
        try:
            wait = float(raw)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):  # neither: the default backoff
                wait = parsedate_to_datetime(raw).timestamp() - time.time()
    if math.isnan(wait):
        wait = float(2**attempt)
    return min(RETRY_AFTER_MAX_SECONDS, max(RETRY_AFTER_MIN_SECONDS, wait))


_ERRORS: dict[int, type[DataverseError]] = {
    401: Unauthorized,
    404: NotFound,
    412: PreconditionFailed,
}
# 401 is retryable at the message level: an admin can re-enable the application user while
# messages wait; the process refreshes its token at most every 30 s meanwhile (auth.py).
_RETRYABLE = frozenset({401, 408, 429, 500, 502, 503, 504})


def error_from_parts(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    method: str | None = None,
    url: str | None = None,
) -> DataverseError:
    code = None
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = str(body["error"].get("message") or message)
    kind = _ERRORS.get(status, Throttled if status == 429 else DataverseError)
    return kind(
        status,
        code,
        message,
        retryable=status in _RETRYABLE,
        request_id=header(headers, "x-ms-service-request-id") or header(headers, "REQ_ID"),
        correlation_id=header(headers, "x-ms-correlation-request-id"),
        method=method,
        url=url,
    )


def error_from(response: httpx.Response, method: str, path: str) -> DataverseError:
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    return error_from_parts(response.status_code, dict(response.headers), body, method, path)
