"""When a contact's email address changes, mark it as unverified and record the change.

It runs only for Updates whose Target carries `emailaddress1`; the step derived from this route
filters on that column, so Dataverse does not even post other updates, and registers the images
it reads. It is ordered: the flag
describes the latest address, so an older change arriving late is skipped as stale. Its own
write to the contact raises another Update event; that one is initiated by this app's
application user and skipped by the loop guard, and it does not touch emailaddress1 anyway.
"""

from __future__ import annotations

from shared import DataverseClient, Entity, RemoteExecutionContext, Router

router = Router()


@router.on(
    entity="contact",
    message="Update",
    attributes=["emailaddress1"],
    pre_image=["emailaddress1"],  # to compare with the old value
    post_image=["emailaddress1"],  # carries the RowVersion that orders changes of the row
    ordered=True,
)
async def mark_email_unverified(
    context: RemoteExecutionContext, dataverse: DataverseClient
) -> None:
    target = context.target
    if not isinstance(target, Entity):
        return
    before = context.pre_entity_images.get("PreImage")
    if before is not None and before.get("emailaddress1") == target.get("emailaddress1"):
        return  # written again with the same value: nothing changed
    # Absolute values, not increments: applying this twice leaves the same row.
    await dataverse.update(
        "contacts",
        context.primary_entity_id,
        {"contoso_emailverified": False, "contoso_emailchangedon": context.operation_created_on},
    )
