"""When an account is created, open a welcome task for its owner, regarding the account.

The task's id is derived from the account's id, and the write is an upsert: however often the
event is delivered, there is exactly one welcome task per account.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from shared import DataverseClient, Entity, RemoteExecutionContext, Router

router = Router()

_TASKS = uuid5(NAMESPACE_URL, "urn:dataverse-event-consumers:welcome-task")


def welcome_task_id(account_id: UUID) -> UUID:
    return uuid5(_TASKS, str(account_id))


# flows=True: an account a cloud flow publishes opens the same task (the upsert makes both
# paths one task; the handler reads nothing a flow's row lacks).
@router.on(entity="account", message="Create", stage=40, flows=True)
async def open_welcome_task(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    account = context.target
    name = account.get("name") if isinstance(account, Entity) else None
    account_id = context.primary_entity_id
    await dataverse.upsert(
        "tasks",
        welcome_task_id(account_id),
        {
            "subject": f"Welcome {name}" if name else "Welcome our new customer",
            "description": "Opened automatically when the account was created.",
            "regardingobjectid_account@odata.bind": f"/accounts({account_id})",
        },
    )
