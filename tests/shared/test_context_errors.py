"""Every way a body can fail to be a context ends in InvalidMessage with its reason code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.context import message_format, parse_context
from shared.errors import InvalidMessage, PermanentError
from tests.conftest import context_bytes


def decode(body: bytes | str, content_type: str | None, validate: bool) -> None:
    context = parse_context(body, content_type)
    if validate:
        context.validate()


def reason_of(body: bytes | str, content_type: str | None = None, validate: bool = False) -> str:
    with pytest.raises(InvalidMessage) as caught:
        decode(body, content_type, validate)
    assert caught.value.message  # something a human can read
    return caught.value.reason


def fixture_json() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(context_bytes("account-create.json"))
    return loaded


def dumps(tree: object) -> bytes:
    return json.dumps(tree).encode()


def test_invalid_message_is_a_permanent_error_with_a_known_reason() -> None:
    assert issubclass(InvalidMessage, PermanentError)
    with pytest.raises(ValueError, match="unknown InvalidMessage reason"):
        InvalidMessage("Whatever", "text")


@pytest.mark.parametrize("body", [b"", b"   \r\n", ""])
def test_empty_body(body: bytes | str) -> None:
    assert reason_of(body) == "EmptyBody"


def test_invalid_json() -> None:
    assert reason_of(b'{"MessageName": "Create",', "application/json") == "InvalidJson"


def test_json_that_is_not_utf8() -> None:
    assert reason_of(b'{"MessageName": "\xff"}', "application/json") == "InvalidEncoding"


def test_invalid_xml() -> None:
    assert reason_of(b"<RemoteExecutionContext><Depth>", "application/xml") == "InvalidXml"


def test_xml_with_a_dtd_is_refused_before_parsing() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><RemoteExecutionContext>&b;'
        b"</RemoteExecutionContext>"
    )
    assert reason_of(bomb, "application/xml") == "InvalidXml"


def test_xml_with_another_root_is_not_a_context() -> None:
    assert reason_of(b"<Envelope/>", "text/xml") == "NotAnExecutionContext"


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b'{"hello": "world"}'])
def test_json_that_is_not_a_context(body: bytes) -> None:
    assert reason_of(body, "application/json") == "NotAnExecutionContext"


def test_missing_required_members_are_named() -> None:
    tree = fixture_json()
    del tree["OrganizationId"]
    with pytest.raises(InvalidMessage, match="OrganizationId") as caught:
        parse_context(dumps(tree))
    assert caught.value.reason == "NotAnExecutionContext"


def test_unreadable_body_without_content_type() -> None:
    assert reason_of(b"hello, world") == "NotAnExecutionContext"


def test_broken_binary_xml() -> None:
    body = context_bytes("account-create.msbin1")
    assert reason_of(body[:-40], "application/msbin1") == "InvalidBinaryXml"
    assert reason_of(body[:-40]) == "InvalidBinaryXml"  # recognised as binary without a type


@pytest.mark.parametrize(
    ("member", "bad"),
    [
        ("PrimaryEntityId", "not-a-guid"),
        ("OperationCreatedOn", "/Date(abc)/"),
        ("OperationCreatedOn", "yesterday"),
        ("Stage", "forty"),
        ("IsInTransaction", "maybe"),
        ("MessageName", 42),
        ("OrganizationId", ["a list"]),
    ],
)
def test_bad_header_values(member: str, bad: object) -> None:
    tree = fixture_json()
    tree[member] = bad
    assert reason_of(dumps(tree), validate=True) == "InvalidValue"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda tree: tree["InputParameters"][0].pop("key"),
        lambda tree: tree["InputParameters"][0]["value"].pop("LogicalName"),
        lambda tree: tree["InputParameters"][0]["value"]["Attributes"].append("not a pair"),
        lambda tree: tree.__setitem__("PostEntityImages", {"not": "a list"}),
        lambda tree: tree["InputParameters"][0]["value"]["Attributes"][3]["value"].pop("Value"),
    ],
)
def test_bad_collections_fail_when_decoded(mutate: Any) -> None:
    tree = fixture_json()
    mutate(tree)
    assert reason_of(dumps(tree), validate=True) == "InvalidValue"


def test_values_nested_too_deeply() -> None:
    tree = fixture_json()
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    tree["SharedVariables"].append({"key": "deep", "value": deep})
    assert reason_of(dumps(tree), validate=True) == "TooDeep"


def test_json_nested_beyond_the_parser_limit() -> None:
    assert reason_of(b"[" * 2000 + b"]" * 2000, "application/json") == "TooDeep"


def test_xml_nested_too_deeply() -> None:
    body = b"<RemoteExecutionContext>" + b"<a>" * 500 + b"</a>" * 500
    body += b"</RemoteExecutionContext>"
    assert reason_of(body, "application/xml") == "TooDeep"


def test_parent_contexts_nested_too_deeply() -> None:
    tree = fixture_json()
    parent = tree["ParentContext"]
    for _ in range(40):
        parent = {**parent, "ParentContext": parent}
    tree["ParentContext"] = parent
    assert reason_of(dumps(tree), validate=True) == "TooDeep"


def test_unknown_type_is_kept_not_a_crash() -> None:
    tree = fixture_json()
    future = {"__type": "FutureThing:http://schemas.contoso.com/2030", "Shape": "round"}
    tree["InputParameters"].append({"key": "Future", "value": future})
    value = parse_context(dumps(tree)).input_parameters["Future"]
    assert value.type_name == "FutureThing:http://schemas.contoso.com/2030"
    assert value.raw["Shape"] == "round"


def test_primitives_with_their_type_spelt_out() -> None:
    tree = fixture_json()
    tree["InputParameters"].append(
        {"key": "When", "value": {"__type": "DateTime:#System", "__value": "/Date(0)/"}}
    )
    when = parse_context(dumps(tree)).input_parameters["When"]
    assert when.year == 1970


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/JSON", "json"),
        ("application/xml", "xml"),
        ("text/xml; charset=utf-8", "xml"),
        ("application/msbin1", "binary"),
        ("application/octet-stream", "json"),  # unknown: the body decides
        (None, "json"),
    ],
)
def test_content_type_picks_the_reader(content_type: str | None, expected: str) -> None:
    assert message_format(b'  {"a": 1}', content_type) == expected


def test_a_byte_order_mark_is_accepted() -> None:
    body = b"\xef\xbb\xbf" + context_bytes("contact-delete.json")
    assert parse_context(body).message_name == "Delete"
    xml = b"\xef\xbb\xbf" + context_bytes("contact-delete.xml")
    assert parse_context(xml).message_name == "Delete"


def test_str_bodies_are_accepted() -> None:
    body = context_bytes("contact-delete.json").decode()
    assert parse_context(body).message_name == "Delete"
