"""Every Dataverse value type, decoded from JSON fixtures written for this project."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

from shared.context import (
    AliasedValue,
    BooleanManagedProperty,
    DataContractValue,
    Entity,
    EntityCollection,
    EntityReference,
    EntityReferenceCollection,
    Money,
    OptionSetValue,
    Relationship,
    RemoteExecutionContext,
    parse_context,
)
from tests.conftest import context_bytes


def parse(name: str) -> RemoteExecutionContext:
    return parse_context(context_bytes(name), "application/json")


def test_header_members_have_python_types() -> None:
    context = parse("account-create.json")
    assert context.message_name == "Create"
    assert context.primary_entity_name == "account"
    assert context.primary_entity_id == UUID("acc00000-0000-4000-8000-000000000001")
    assert context.secondary_entity_name == "none"
    assert (context.stage, context.mode, context.depth, context.isolation_mode) == (40, 1, 1, 1)
    assert context.is_in_transaction is False
    assert context.is_executing_offline is False
    assert context.is_offline_playback is False
    assert context.correlation_id == UUID("c0ffee00-1111-4222-8333-444455556666")
    assert context.operation_id == UUID("0e000000-0000-4000-8000-000000000001")
    assert context.request_id == UUID("4e000000-0000-4000-8000-000000000001")
    assert context.organization_id == UUID("0f000000-0000-4000-8000-0000000000aa")
    assert context.organization_name == "contoso"
    assert context.user_id == context.initiating_user_id
    assert context.business_unit_id == UUID("0a1b2c3d-0000-4000-8000-000000000001")
    aad = UUID("aad00000-0000-4000-8000-0000000000a1")
    assert context.initiating_user_azure_active_directory_object_id == aad
    assert context.user_azure_active_directory_object_id == aad
    assert context.initiating_user_agent == "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
    assert context.owning_extension == EntityReference(
        "sdkmessageprocessingstep",
        UUID("57e90000-0000-4000-8000-000000000001"),
        name="contoso-events: Create of account",
    )


def test_dates_with_offset_are_utc_milliseconds_and_the_offset_is_ignored() -> None:
    # "/Date(1735689601234+0100)/": the number is already UTC.
    created = parse("account-create.json").operation_created_on
    assert created == datetime(2025, 1, 1, 0, 0, 1, 234000, tzinfo=UTC)
    assert created.tzinfo is UTC


def test_dates_without_offset_and_with_unescaped_slashes() -> None:
    context = parse("contact-update.json")  # written with plain "/Date(...)/" slashes
    assert context.operation_created_on == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
    target = context.target
    assert isinstance(target, Entity)
    assert target["modifiedon"] == datetime(2017, 9, 26, 0, 4, 7, tzinfo=UTC)


def test_dates_before_the_epoch_decode() -> None:
    # DateTime.MinValue, as .NET writes it.
    assert parse("custom-api.json").input_parameters["contoso_When"] == datetime(
        1, 1, 1, tzinfo=UTC
    )


def test_target_entity_and_its_attribute_types() -> None:
    target = parse("account-create.json").target
    assert isinstance(target, Entity)
    assert target.logical_name == "account"
    assert target.id == UUID("acc00000-0000-4000-8000-000000000001")
    assert target["name"] == "Northwind Traders"
    assert target.get("missing", "default") == "default"
    assert "name" in target
    assert "missing" not in target
    assert target["accountid"] == UUID("acc00000-0000-4000-8000-000000000001")
    assert target["numberofemployees"] == 250
    assert target["revenue"] == Money(Decimal("1234567.8912"))
    assert target["exchangerate"] == Decimal("1.0000000000")
    assert isinstance(target["address1_latitude"], Decimal)
    assert target["industrycode"] == OptionSetValue(7)
    assert target["new_regions"] == [OptionSetValue(100000000), OptionSetValue(100000002)]
    assert target["primarycontactid"] == EntityReference(
        "contact", UUID("c0000000-0000-4000-8000-000000000007"), name="Nancy Davolio"
    )
    assert target["donotemail"] is False
    assert target["createdon"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert target["description"] == "line one\nline two"
    assert target["parentaccountid"] is None


def test_money_keeps_every_digit_a_double_would_lose() -> None:
    target = parse("account-create.json").target
    assert isinstance(target, Entity)
    amount = target["creditlimit"].value
    assert amount == Decimal("922337203685477.5807")
    assert float(amount) != amount  # a double could not have held it


def test_integers_beyond_double_precision_stay_exact() -> None:
    assert parse("custom-api.json").input_parameters["contoso_BigCount"] == 9007199254740993


def test_images_formatted_values_and_row_version() -> None:
    context = parse("contact-update.json")
    pre = context.pre_entity_images["PreImage"]
    post = context.post_entity_images["PostImage"]
    assert pre["emailaddress1"] == "nancy.old@example.com"
    assert post["emailaddress1"] == "nancy@example.com"
    assert post.formatted_values == {"creditlimit": "$100.00"}
    assert post["creditlimit"] == Money(Decimal(100))
    assert (pre.row_version, post.row_version) == ("147059700", "147059704")


def test_entity_collection_in_an_image() -> None:
    pre = parse("contact-update.json").pre_entity_images["PreImage"]
    parties = pre["new_recipients"]
    assert isinstance(parties, EntityCollection)
    assert parties.entity_name == "activityparty"
    assert parties.more_records is False
    assert parties.total_record_count == -1
    assert parties.min_active_row_version == "-1"
    (party,) = parties
    assert len(parties) == 1
    assert party["partyid"].name == "Andrew Fuller"
    assert party["participationtypemask"] == OptionSetValue(2)


def test_custom_api_parameters_of_every_kind() -> None:
    context = parse("custom-api.json")
    assert context.primary_entity_name == "none"
    assert context.primary_entity_id == UUID(int=0)
    assert context.target is None
    inputs = context.input_parameters
    assert inputs["contoso_Count"] == 42
    assert inputs["contoso_Ratio"] == Decimal("0.125")
    assert inputs["contoso_Flag"] is True
    assert inputs["contoso_Codes"] == ["ABC", "DEF"]
    assert inputs["contoso_Choice"] == OptionSetValue(3)
    rows = inputs["contoso_Rows"]
    assert isinstance(rows, EntityCollection)
    assert rows.more_records is True
    assert rows.paging_cookie == '<cookie page="1"/>'
    assert rows[0]["contact.fullname"] == AliasedValue("contact", "fullname", "Nancy Davolio")
    assert inputs["contoso_Customizable"] == BooleanManagedProperty(
        True, False, "iscustomizableanddeletable"
    )
    query = inputs["Query"]
    assert isinstance(query, DataContractValue)
    assert query.type_name == "QueryExpression"
    assert query["EntityName"] == "account"
    assert query["ColumnSet"]["Columns"] == ["name", "accountid"]
    assert context.output_parameters == {"contoso_Result": "done"}
    assert context.shared_variables == {"x-ms-app-name": "contoso_app"}


def test_associate_carries_relationship_and_reference_collection() -> None:
    context = parse("associate.json")
    assert context.target == EntityReference(
        "account", UUID("acc00000-0000-4000-8000-000000000001")
    )
    inputs = context.input_parameters
    assert inputs["Relationship"] == Relationship("contact_customer_accounts")
    related = inputs["RelatedEntities"]
    assert isinstance(related, EntityReferenceCollection)
    assert [reference.id for reference in related] == [
        UUID("c0000000-0000-4000-8000-000000000007"),
        UUID("c0000000-0000-4000-8000-000000000008"),
    ]


def test_delete_target_is_a_reference_with_a_pre_image() -> None:
    context = parse("contact-delete.json")
    assert isinstance(context.target, EntityReference)
    assert context.pre_entity_images["AsynchronousStepPrimaryName"]["fullname"] == "Andrew Fuller"
    assert context.post_entity_images == {}


def test_output_parameters_of_create_hold_the_new_id() -> None:
    assert parse("account-create.json").output_parameters["id"] == UUID(
        "acc00000-0000-4000-8000-000000000001"
    )


def test_shared_variables_including_a_string_dictionary() -> None:
    shared = parse("account-create.json").shared_variables
    assert shared["tag"] == "contoso-events"
    assert shared["IsAutoTransact"] is True
    assert shared["ChangedEntityTypes"] == {"account": "Update", "contact": "Update"}


def test_nested_parent_context() -> None:
    context = parse("account-create.json")
    parent = context.parent_context
    assert parent is not None
    assert (parent.stage, parent.mode, parent.is_in_transaction) == (30, 0, True)
    assert parent.operation_id == UUID(int=0)
    parent_target = parent.target
    assert isinstance(parent_target, Entity)
    assert parent_target.id is None  # the empty GUID: the row had no id yet
    assert parent.parent_context is None
    assert parent.owning_extension is not None
    assert parent.owning_extension.id is None


def test_truncated_message_has_no_target_and_no_images() -> None:
    context = parse("account-update-truncated.json")
    assert context.target is None
    assert context.input_parameters == {}
    assert context.pre_entity_images == {}
    assert context.parent_context is None


def test_older_captures_without_newer_members_get_defaults() -> None:
    context = parse("contact-update.json")
    assert context.request_id is None
    assert context.initiating_user_agent is None
    assert context.user_azure_active_directory_object_id is None


def test_repr_names_identifiers_only() -> None:
    shown = repr(parse("account-create.json"))
    assert "Northwind" not in shown
    assert "0e000000-0000-4000-8000-000000000001" in shown


@pytest.mark.parametrize(
    "name",
    [
        "account-create.json",
        "contact-update.json",
        "associate.json",
        "custom-api.json",
        "contact-delete.json",
        "account-update-truncated.json",
    ],
)
def test_validate_decodes_everything_and_equals_a_lazy_decode(name: str) -> None:
    eager = parse(name).validate()
    lazy = parse(name)
    assert eager == lazy


def test_long_literals_stay_exact_in_parent_contexts_whatever_is_read_first() -> None:
    import orjson

    tree = orjson.loads(context_bytes("account-create.json"))
    long_amount = (
        '{"__type":"Money:http://schemas.microsoft.com/xrm/2011/Contracts",'
        '"Value":123456789012345.6789}'
    )
    parent_target = b'"Attributes":[{"key":"name","value":"Northwind Traders"}'
    tail = b'],"EntityState":null,"FormattedValues":[],"Id":"00000000'
    body = orjson.dumps(tree).replace(
        parent_target + tail,
        parent_target + b',{"key":"revenue","value":' + long_amount.encode() + b"}" + tail,
    )
    assert body.count(b"123456789012345.6789") == 1
    context = parse_context(body)
    assert context.target is not None  # the outer collections first: the exact tree is in use
    parent = context.parent_context
    assert parent is not None
    assert isinstance(parent.target, Entity)
    assert parent.target["revenue"] == Money(Decimal("123456789012345.6789"))
