"""The XML format decodes to the same context as JSON.

The .xml fixtures were written by Microsoft's DataContractSerializer (run through Mono by
tools/fixturegen/generate.sh) from the .json fixtures, so they show the real XML conventions:
`i:type` on polymorphic values, `i:nil` for nulls, hashed image item names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from shared.context import Entity, OptionSetValue, parse_context
from tests.conftest import CONTEXTS, context_bytes

PAIRS = sorted(path.stem for path in CONTEXTS.glob("*.xml"))


def test_every_xml_fixture_has_its_json_twin() -> None:
    assert len(PAIRS) >= 6
    for stem in PAIRS:
        assert (CONTEXTS / f"{stem}.json").exists()


@pytest.mark.parametrize("stem", PAIRS)
def test_xml_and_json_decode_to_equal_contexts(stem: str) -> None:
    from_json = parse_context(context_bytes(f"{stem}.json"), "application/json").validate()
    from_xml = parse_context(context_bytes(f"{stem}.xml"), "application/xml").validate()
    if stem == "custom-api":
        # QueryExpression members are untyped in XML (text) and typed in JSON; compare the rest.
        query_json = from_json.input_parameters["Query"]
        query_xml = from_xml.input_parameters["Query"]
        assert query_json.members["EntityName"] == query_xml.members["EntityName"]
        assert query_xml.members["Distinct"] == "false"
        for context in (from_json, from_xml):
            del context.input_parameters["Query"]  # type: ignore[attr-defined]
    assert from_xml == from_json


def test_typed_values_in_xml() -> None:
    context = parse_context(context_bytes("account-create.xml"))  # sniffed as XML
    target = context.target
    assert isinstance(target, Entity)
    assert target["accountid"] == UUID("acc00000-0000-4000-8000-000000000001")  # i:type guid
    assert target["createdon"] == datetime(2025, 1, 1, tzinfo=UTC)  # i:type dateTime
    assert target["new_regions"] == [OptionSetValue(100000000), OptionSetValue(100000002)]
    assert target["parentaccountid"] is None  # i:nil
    assert context.operation_created_on == datetime(2025, 1, 1, 0, 0, 1, 234000, tzinfo=UTC)


def test_image_items_are_found_by_shape_not_by_hashed_name() -> None:
    body = context_bytes("contact-update.xml")
    assert b"KeyValuePairOfstringEntity" in body  # the serializer's hashed item name
    context = parse_context(body, "application/xml")
    assert context.pre_entity_images["PreImage"]["emailaddress1"] == "nancy.old@example.com"


def test_xml_with_nil_members_and_unspecified_kind_dates() -> None:
    body = b"""<RemoteExecutionContext xmlns="http://schemas.microsoft.com/xrm/2011/Contracts"
        xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
      <MessageName>Update</MessageName><PrimaryEntityName>account</PrimaryEntityName>
      <OrganizationId>0f000000-0000-4000-8000-0000000000aa</OrganizationId>
      <OperationCreatedOn>2025-03-01T10:00:00.1234567</OperationCreatedOn>
      <RequestId i:nil="true"/><ParentContext i:nil="true"/>
    </RemoteExecutionContext>"""
    context = parse_context(body, "application/xml").validate()
    assert context.request_id is None
    assert context.parent_context is None
    assert context.operation_created_on == datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
