"""The emulator serves the tables of tables.toml and refuses what Dataverse refuses: unknown
properties in a payload, unknown columns in a query, unsupported options; `$count` and
`$expand` answer with results. Code that passes here must not fail there."""

from __future__ import annotations

import httpx
import pytest

from shared.tables import project_tables
from tests.tools.conftest import Http
from tools.emulator import DataverseEmulator


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def test_the_emulator_serves_the_tables_the_project_describes() -> None:
    emulator = DataverseEmulator()
    served = {table.logical_name for table in emulator.tables.values()}
    assert set(project_tables()) <= served
    assert emulator.tables["contacts"].primary_id == "contactid"
    assert emulator.tables["tasks"].primary_id == "activityid"


async def test_an_unknown_property_in_a_payload_is_refused(http: Http) -> None:
    client, emulator = http
    for response in (
        await client.post("accounts", json={"name": "A", "nmae": "typo"}),
        await client.patch("accounts(00000000-0000-4000-8000-000000000001)", json={"nmae": "x"}),
    ):
        status, code, message = error(response)
        assert (status, code) == (400, "0x80048d19")
        assert (
            "The property 'nmae' does not exist on type 'Microsoft.Dynamics.CRM.account'" in message
        )
    assert emulator.rows("accounts") == []


async def test_a_bind_to_a_navigation_property_the_table_lacks_is_refused(http: Http) -> None:
    client, _ = http
    created = await client.post("accounts", json={"name": "A"})
    account = created.headers["OData-EntityId"].rsplit("/", 1)[1]
    good = await client.post(
        "contacts", json={"lastname": "B", "parentcustomerid_account@odata.bind": f"/{account}"}
    )
    assert good.status_code == 204
    bad = await client.post(
        "contacts", json={"lastname": "B", "parentcustomer_account@odata.bind": f"/{account}"}
    )
    status, code, message = error(bad)
    assert (status, code) == (400, "0x80048d19")
    assert "undeclared property 'parentcustomer_account'" in message


@pytest.mark.parametrize(
    "query",
    ["$select=Name", "$filter=nmae eq 'x'", "$orderby=nmae desc", "$select=name,telephone9"],
)
async def test_an_unknown_column_in_a_query_is_refused_as_learn_documents(
    http: Http, query: str
) -> None:
    client, _ = http
    status, code, message = error(await client.get(f"accounts?{query}"))
    assert (status, code) == (400, "0x0")
    assert message.startswith("Could not find a property named '")
    assert message.endswith("' on type 'Microsoft.Dynamics.CRM.account'.")


async def test_an_unknown_entity_set_is_the_documented_404(http: Http) -> None:
    client, _ = http
    assert error(await client.get("Account")) == (
        404,
        "0x8006088a",
        "Resource not found for the segment 'Account'.",
    )


async def test_skip_is_not_supported(http: Http) -> None:
    client, _ = http
    status, _, message = error(await client.get("accounts?$skip=10"))
    assert status == 400
    assert "$skip is not supported" in message


async def test_count_answers_the_rows_matching_the_filter(http: Http) -> None:
    client, _ = http
    for name in ("Alpha", "Beta", "Alpine"):
        await client.post("accounts", json={"name": name})
    page = (await client.get("accounts?$filter=startswith(name,'Al')&$count=true&$top=1")).json()
    assert page["@odata.count"] == 2
    assert len(page["value"]) == 1
    counted = await client.get("accounts/$count")
    assert (counted.status_code, counted.text) == (200, "3")


async def test_expand_on_a_collection_brings_the_related_row(http: Http) -> None:
    client, _ = http
    created = await client.post("accounts", json={"name": "Parent"})
    account = created.headers["OData-EntityId"].rsplit("/", 1)[1]
    await client.post(
        "contacts", json={"lastname": "Child", "parentcustomerid_account@odata.bind": f"/{account}"}
    )
    page = (
        await client.get("contacts?$select=lastname&$expand=parentcustomerid_account($select=name)")
    ).json()
    (contact,) = page["value"]
    assert contact["parentcustomerid_account"]["name"] == "Parent"


async def test_a_table_added_by_a_test_takes_any_column_unless_its_columns_are_given(
    http: Http,
) -> None:
    client, emulator = http
    emulator.add_table("contoso_loose")
    assert (await client.post("contoso_looses", json={"anything": 1})).status_code == 204
    emulator.add_table("contoso_strict", columns=("contoso_name",))
    response = await client.post("contoso_stricts", json={"contoso_nmae": "x"})
    assert response.status_code == 400
