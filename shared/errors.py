"""The error vocabulary shared by decoding, handlers, the Dataverse client and the dispatcher.

Two families matter to the dispatcher: permanent errors (the message can never succeed, so it is
dead-lettered with a reason a human can act on) and transient errors (try again later, so the
message goes back to the broker). Everything else is treated as transient: an unknown bug is
retried up to the broker's delivery limit, then dead-lettered by the broker itself.
"""

from __future__ import annotations

from shared.redaction import redact


class PermanentError(Exception):
    """Raised by a handler to give up on a message: retrying cannot help."""

    reason = "PermanentError"


class TransientError(Exception):
    """Raised by a handler to ask for a redelivery: the same message may succeed later."""


class InvalidMessage(PermanentError):
    """A message body is not a readable Dataverse execution context.

    `reason` is a short machine-readable code (dead-letter reason); the message says what was
    wrong and, where there is one, what the operator should change.
    """

    # The codes in use; kept here so operators and tests share one list.
    REASONS = frozenset(
        {
            "EmptyBody",
            "InvalidEncoding",
            "InvalidJson",
            "InvalidXml",
            "InvalidBinaryXml",
            "NotAnExecutionContext",
            "InvalidValue",
            "TooDeep",
        }
    )

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown InvalidMessage reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class DataverseError(Exception):
    """A Web API call failed. `retryable` says whether the same call may succeed later (the
    dispatcher then hands the message back to the broker); `code` is Dataverse's error code
    (for example `0x80040217`, object does not exist)."""

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str,
        *,
        retryable: bool,
        request_id: str | None = None,
        correlation_id: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.method = method
        self.url = url

    def __str__(self) -> str:
        """Status, code, Dataverse's message and the request, with key values, filter literals
        and query strings redacted (shared.redaction): this text reaches logs and dead letters."""
        status = "no response" if self.status is None else f"HTTP {self.status}"
        where = f" ({self.method} {redact(self.url or '')})" if self.method else ""
        code = f" {self.code}" if self.code else ""
        return f"{status}{code}: {redact(self.message)}{where}"


class NotFound(DataverseError):
    """404: the row (or table) does not exist."""


class PreconditionFailed(DataverseError):
    """412: an optimistic-concurrency check failed (the row changed since its etag was read) or
    a create-only upsert met an existing row."""


class Throttled(DataverseError):
    """429 whose pause would outlast what a call waits (`RetryPolicy.max_pause_seconds`): give
    the message back."""


class Unauthorized(DataverseError):
    """401 with a fresh token: the application user is disabled, deleted or without a role, or
    the token's audience is wrong. Retryable (an admin can fix it while messages wait); after
    the broker's deliveries it is dead-lettered as `Unauthorized`."""


class InvalidResponse(DataverseError):
    """A 2xx answer whose body is not what the Web API sends (HTML from a gateway, a truncated
    body): retryable, since the same call usually succeeds from another front end."""
