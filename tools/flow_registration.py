"""`tools.endpoints apply` for the environment file's `[[flows]]` with a `table`: the cloud flow
that publishes that table's rows, as a `workflow` row (Learn, "Work with cloud flows using
code": category 5, type 1, its definition in `clientdata`), with its two environment
variables (the queue, the organization's host).

What stays manual, as the Web API cannot do it: making the Dataverse and Service Bus
connections (an OAuth consent and a key or Entra sign-in) and setting them on the connection
references. Until both are connected the flow stays off and the report says what to connect;
the next `apply` turns it on.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from shared.dataverse import DataverseClient, RequestOptions
from shared.dataverse.addressing import literal
from shared.flow_definition import (
    ACTIVATED,
    DRAFT,
    MODERN_FLOW,
    STRING_VARIABLE,
    clientdata,
    connection_references,
    variables,
)
from shared.registration import EnvironmentSpec, FlowSpec, SpecError


async def reconcile_flows(
    client: DataverseClient,
    spec: EnvironmentSpec,
    *,
    apply: bool,
    options: RequestOptions,
    add: Callable[[str], None],
    note: Callable[[str], None],
) -> None:
    for flow in spec.flows:
        if flow.table is not None:
            await _flow(client, spec, flow, apply=apply, options=options, add=add, note=note)


def definition(spec: EnvironmentSpec, flow: FlowSpec) -> str:
    queue = flow.queue or (spec.endpoints[0].path if spec.endpoints else None)
    if not queue or not flow.table:
        raise SpecError(f"flow {flow.name}: no queue (set `queue`, or declare an endpoint)")
    return clientdata(
        table=flow.table,
        messages=flow.messages,
        queue=queue,
        organization=urlsplit(spec.dataverse_url).hostname or "",
        dataverse_connection=flow.dataverse_connection_reference or f"{flow.prefix}_dataverse",
        servicebus_connection=flow.connection_reference or f"{flow.prefix}_servicebus",
        prefix=flow.prefix,
    )


async def _flow(
    client: DataverseClient,
    spec: EnvironmentSpec,
    flow: FlowSpec,
    *,
    apply: bool,
    options: RequestOptions,
    add: Callable[[str], None],
    note: Callable[[str], None],
) -> None:
    raw = definition(spec, flow)
    for schema, default in variables(raw).values():
        found = await client.first(
            "environmentvariabledefinitions", filter=f"schemaname eq {literal(schema)}"
        )
        if found is None:
            add(f"+ environment variable {schema} = {default}")
            if apply:
                await client.create(
                    "environmentvariabledefinitions",
                    {"schemaname": schema, "displayname": schema, "type": STRING_VARIABLE,
                     "defaultvalue": default},
                    options=options,
                )  # fmt: skip
    existing = await client.first(
        "workflows", filter=f"name eq {literal(flow.name)} and category eq {MODERN_FLOW}"
    )
    desired = {"name": flow.name, "category": MODERN_FLOW, "type": 1, "primaryentity": "none",
               "clientdata": raw}  # fmt: skip
    if existing is None:
        add(f"+ cloud flow {flow.name} (publishes {flow.table} {'/'.join(flow.messages)})")
        if not apply:
            return
        workflow_id = await client.create("workflows", desired, options=options)
        state = DRAFT
    else:
        workflow_id = existing["workflowid"]
        state = int(existing.get("statecode") or DRAFT)
        if existing.get("clientdata") != raw:
            add(f"~ cloud flow {flow.name}: definition")
            if apply:
                await client.update("workflows", workflow_id, {"clientdata": raw}, options=options)
    if state == ACTIVATED:
        return
    missing = []
    for reference in connection_references(raw):
        found = await client.first(
            "connectionreferences",
            filter=f"connectionreferencelogicalname eq {literal(reference)}",
            select=["connectionid"],
        )
        if not (found and found.get("connectionid")):
            missing.append(reference)
    if missing:
        note(
            f"! cloud flow {flow.name} stays off: connect {', '.join(missing)} in the maker "
            "portal (Solutions > Connection references), then apply again"
        )
        return
    add(f"~ cloud flow {flow.name}: turned on")
    if apply:
        await client.update(
            "workflows", workflow_id, {"statecode": ACTIVATED, "statuscode": 2}, options=options
        )
