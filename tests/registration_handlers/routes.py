"""The routes of the bundled handlers as they were when these tests were written."""

from __future__ import annotations

from shared import DataverseClient, RemoteExecutionContext, Router

router = Router()


@router.on(entity="*", message="*")
async def audit(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    return None


@router.on(
    entity="contact",
    message="Update",
    attributes=["emailaddress1"],
    pre_image=["emailaddress1"],
    post_image=["emailaddress1"],
    ordered=True,
)
async def email_changed(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    return None


@router.on(entity="account", message="Create", stage=40)
async def welcome(context: RemoteExecutionContext, dataverse: DataverseClient) -> None:
    return None
