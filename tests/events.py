"""Events built from the project's fixtures, with the claims Dataverse adds."""

from __future__ import annotations

from typing import Any

import orjson

from shared.events import DataverseEvent
from tests.conftest import context_bytes

ORGANIZATION_ID = "0f000000-0000-4000-8000-0000000000aa"
CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"


def claims(organization: str = "contoso.crm.dynamics.com", **extra: str) -> dict[str, str]:
    found = {CLAIMS + "Organization": organization}
    found.update({CLAIMS + name: value for name, value in extra.items()})
    return found


def event(
    name: str = "account-create.json",
    *,
    body: bytes | None = None,
    properties: dict[str, Any] | None = None,
    message_id: str = "message-1",
    changes: dict[str, Any] | None = None,
) -> DataverseEvent:
    """`changes` replaces top-level members of the fixture's JSON (e.g. another OperationId)."""
    if body is None:
        body = context_bytes(name)
        if changes:
            tree = orjson.loads(body)
            tree.update(changes)
            body = orjson.dumps(tree)
    return DataverseEvent(
        body=body,
        content_type="application/json",
        message_id=message_id,
        delivery_count=1,
        properties=claims() if properties is None else properties,
        transport="servicebus",
    )
