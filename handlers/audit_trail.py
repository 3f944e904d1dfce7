"""Every event, whatever its table and message, leaves one structured audit line: who did what
to which row, and when. Values are not logged; the line names the columns that changed."""

from __future__ import annotations

import logging

from shared import DataverseClient, Entity, RemoteExecutionContext, Router

router = Router()
audit = logging.getLogger("dataverse.audit")

# A wide row's column list made one 950 KB line; log ingestion truncates or drops such lines.
MAX_COLUMNS_LOGGED = 50


def column_summary(columns: list[str]) -> str:
    """The first MAX_COLUMNS_LOGGED column names, and how many more there were."""
    shown = ", ".join(columns[:MAX_COLUMNS_LOGGED])
    more = len(columns) - MAX_COLUMNS_LOGGED
    return f"[{shown}]" + (f" and {more} more" if more > 0 else "")


@router.on(entity="*", message="*")
async def record_audit_line(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    target = context.target
    columns = sorted(target.attributes) if isinstance(target, Entity) else []
    audit.info(
        "%s of %s %s by user %s at %s; columns %s",
        context.message_name,
        context.primary_entity_name,
        context.primary_entity_id,
        context.initiating_user_id,
        context.operation_created_on.isoformat(),
        column_summary(columns),
    )
