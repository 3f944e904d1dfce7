"""The error vocabulary shared by decoding, handlers, the Dataverse client and the dispatcher.

Two families matter to the dispatcher: permanent errors (the message can never succeed, so it is
dead-lettered with a reason a human can act on) and transient errors (try again later, so the
message goes back to the broker). Everything else is treated as transient: an unknown bug is
retried up to the broker's delivery limit, then dead-lettered by the broker itself.
"""

from __future__ import annotations


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
            "NotAnExecutionContext",
            "InvalidValue",
            "TooDeep",
            "UnsupportedFormat",
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
