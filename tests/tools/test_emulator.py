"""The emulator answers the way the Web API documents it, seen with plain HTTP requests."""

from __future__ import annotations

import httpx
import pytest

from tools.emulator import API_PREFIX, DataverseEmulator
from tools.emulator.odata import QueryError, parse_filter


async def test_a_request_without_a_bearer_token_is_401() -> None:
    emulator = DataverseEmulator()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url="https://x" + API_PREFIX
    ) as client:
        response = await client.get("accounts")
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


async def test_errors_have_the_odata_shape(
    http: tuple[httpx.AsyncClient, DataverseEmulator],
) -> None:
    client, _ = http
    response = await client.get("accounts(00000000-0000-0000-0000-000000000001)")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "0x80040217"
    assert "Does Not Exist" in error["message"]
    unknown = await client.get("nosuchthings")
    assert unknown.status_code == 404
    assert "nosuchthings" in unknown.json()["error"]["message"]


async def test_create_answers_204_with_the_entity_url(
    http: tuple[httpx.AsyncClient, DataverseEmulator],
) -> None:
    client, _ = http
    response = await client.post("accounts", json={"name": "A"})
    assert response.status_code == 204
    assert response.headers["OData-EntityId"].startswith(
        "https://contoso.crm.dynamics.com/api/data/v9.2/accounts("
    )
    represented = await client.post(
        "accounts", json={"name": "B"}, headers={"Prefer": "return=representation"}
    )
    assert represented.status_code == 201
    assert represented.json()["name"] == "B"


async def test_table_definitions_name_each_tables_entity_set(
    http: tuple[httpx.AsyncClient, DataverseEmulator],
) -> None:
    """Learn, "Query table definitions using the Web API": the shape clients read (Microsoft's
    Python SDK resolves a logical name this way before its first write)."""
    client, _ = http
    found = await client.get(
        "EntityDefinitions",
        params={
            "$select": "LogicalName,EntitySetName,PrimaryIdAttribute",
            "$filter": "LogicalName eq 'contact'",
        },
    )
    assert found.status_code == 200
    assert found.json()["value"] == [
        {"LogicalName": "contact", "EntitySetName": "contacts", "PrimaryIdAttribute": "contactid"}
    ]
    none = await client.get("EntityDefinitions", params={"$filter": "LogicalName eq 'nosuch'"})
    assert none.json()["value"] == []
    one = await client.get("EntityDefinitions(LogicalName='account')")
    assert one.json()["EntitySetName"] == "accounts"
    missing = await client.get("EntityDefinitions(LogicalName='nosuch')")
    assert missing.status_code == 404
    choices = await client.get(
        "EntityDefinitions(LogicalName='account')/Attributes/"
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    )
    assert choices.json()["value"] == []


async def test_injected_throttling_carries_retry_after(
    http: tuple[httpx.AsyncClient, DataverseEmulator],
) -> None:
    client, emulator = http
    emulator.inject(429, retry_after=7)
    response = await client.get("accounts")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["code"] == "0x80072322"
    assert (await client.get("accounts")).status_code == 200


async def test_random_faults_are_seeded_and_at_the_rate_asked() -> None:
    emulator = DataverseEmulator(seed=3)
    emulator.random_faults(0.25, statuses=(503,))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator),
        base_url="https://x" + API_PREFIX,
        headers={"Authorization": "Bearer t"},
    ) as client:
        statuses = [(await client.get("accounts")).status_code for _ in range(400)]
    assert 70 <= statuses.count(503) <= 130
    assert set(statuses) == {200, 503}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name eq 'Contoso'", True),
        ("name eq 'contoso'", True),  # text compares case-insensitively
        ("name ne 'Contoso'", False),
        ("revenue gt 10 and revenue le 100", True),
        ("revenue lt 10 or name eq 'Contoso'", True),
        ("not (revenue ge 50)", False),
        ("contains(name,'ntos')", True),
        ("startswith(name,'Con') and endswith(name,'so')", True),
        ("_ownerid_value eq 5e000000-0000-4000-8000-0000000000ee", True),
        ("parentaccountid eq null", True),
        ("name eq 'O''Brien'", False),
    ],
)
def test_filter_expressions(expression: str, expected: bool) -> None:
    row = {
        "name": "Contoso",
        "revenue": 50,
        "_ownerid_value": "5e000000-0000-4000-8000-0000000000ee",
        "parentaccountid": None,
    }
    assert parse_filter(expression)(row) is expected


@pytest.mark.parametrize("expression", ["name eq", "name like 'x'", "(name eq 'a'", "eq 'a'"])
def test_malformed_filters_are_refused(expression: str) -> None:
    with pytest.raises(QueryError):
        parse_filter(expression)
