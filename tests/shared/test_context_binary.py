"""The .NET binary format: the same contexts as JSON and XML, and every record type of [MC-NBFX].

The .msbin1 fixtures were written by Microsoft's serializers through Mono (tools/fixturegen):
`.msbin1` straight from DataContractSerializer, `.dictionary.msbin1` through the binary writer
with the static dictionary and typed values (dictionary, QName, Uuid, DateTime, Decimal, Int64,
Bool records). The record examples below are built from the spec's record definitions, each
with the XML it stands for.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from uuid import UUID
from xml.etree import ElementTree

import pytest

from shared.context import Entity, RemoteExecutionContext, parse_context
from shared.context.binary_reader import read_binary
from shared.context.nbfs import STATIC_DICTIONARY
from shared.errors import InvalidMessage
from tests.conftest import CONTEXTS, context_bytes

STEMS = sorted(
    path.name[: -len(".msbin1")]
    for path in CONTEXTS.glob("*.msbin1")
    if not path.name.endswith(".dictionary.msbin1")
)


def without_query(context: RemoteExecutionContext) -> RemoteExecutionContext:
    # QueryExpression members are untyped in XML and binary (text) and typed in JSON.
    context.validate()
    context.input_parameters.pop("Query", None)  # type: ignore[attr-defined]
    return context


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("variant", [".msbin1", ".dictionary.msbin1"])
def test_binary_decodes_to_the_same_context_as_json_and_xml(stem: str, variant: str) -> None:
    binary = parse_context(context_bytes(stem + variant), "application/msbin1").validate()
    xml = parse_context(context_bytes(stem + ".xml")).validate()
    assert binary == xml  # value by value, typed values included
    from_json = parse_context(context_bytes(stem + ".json"))
    assert without_query(binary) == without_query(from_json)


def test_binary_is_recognised_without_a_content_type() -> None:
    assert parse_context(context_bytes("associate.dictionary.msbin1")).message_name == "Associate"


def test_the_vectors_exercise_dictionary_and_typed_records() -> None:
    body = b"".join(path.read_bytes() for path in CONTEXTS.glob("*.dictionary.msbin1"))
    for record in (b"\x0b\x01i", b"\xb1", b"\x97", b"\x95", b"\x8f", b"\xbc", b"\x87", b"\x85"):
        assert record in body, record.hex()
    assert STATIC_DICTIONARY[0x372] == "http://www.w3.org/2001/XMLSchema-instance"


def test_money_dates_and_guids_keep_their_values() -> None:
    context = parse_context(context_bytes("account-create.dictionary.msbin1"))
    target = context.target
    assert isinstance(target, Entity)
    assert context.parent_context is not None
    assert target["creditlimit"].value == Decimal("922337203685477.5807")
    assert target["exchangerate"] == Decimal("1.0000000000")
    assert target["accountid"] == UUID("acc00000-0000-4000-8000-000000000001")
    assert (
        context.operation_created_on.isoformat() == "2025-01-01T00:00:01.234000+00:00"
    )  # local kind
    assert (
        context.parent_context.operation_created_on.isoformat()
        == "2025-01-01T00:00:00.990000+00:00"
    )


# --- one example per record type -------------------------------------------------------------


def chars(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def xml(body: bytes) -> str:
    return ElementTree.tostring(read_binary(body), encoding="unicode")


NS = "http://tempuri.org"
RECORD_EXAMPLES = [
    # elements
    ("ShortElement 0x40", b"\x40" + chars("doc") + b"\x01", "<doc />"),
    (
        "Element 0x41",
        b"\x41" + chars("p") + chars("doc") + b"\x09" + chars("p") + chars(NS) + b"\x01",
        f'<ns0:doc xmlns:ns0="{NS}" />',
    ),
    ("ShortDictionaryElement 0x42", b"\x42\x02\x01", "<Envelope />"),
    (
        "DictionaryElement 0x43",
        b"\x43" + chars("s") + b"\x02\x0b" + chars("s") + b"\x04\x01",
        '<ns0:Envelope xmlns:ns0="http://www.w3.org/2003/05/soap-envelope" />',
    ),
    (
        "PrefixDictionaryElementS 0x56",
        b"\x56\x02\x0b" + chars("s") + b"\x04\x01",
        '<ns0:Envelope xmlns:ns0="http://www.w3.org/2003/05/soap-envelope" />',
    ),
    (
        "PrefixElementA 0x5E",
        b"\x5e" + chars("doc") + b"\x09" + chars("a") + chars(NS) + b"\x01",
        f'<ns0:doc xmlns:ns0="{NS}" />',
    ),
    (
        "PrefixElementZ 0x77",
        b"\x77" + chars("doc") + b"\x09" + chars("z") + chars(NS) + b"\x01",
        f'<ns0:doc xmlns:ns0="{NS}" />',
    ),
    # attributes
    (
        "ShortAttribute 0x04",
        b"\x40" + chars("doc") + b"\x04" + chars("attr") + b"\x98" + chars("v") + b"\x01",
        '<doc attr="v" />',
    ),
    (
        "Attribute 0x05",
        b"\x40"
        + chars("doc")
        + b"\x09"
        + chars("p")
        + chars(NS)
        + b"\x05"
        + chars("p")
        + chars("attr")
        + b"\x84\x01",
        f'<doc xmlns:ns0="{NS}" ns0:attr="false" />',
    ),
    (
        "ShortDictionaryAttribute 0x06",
        b"\x40" + chars("doc") + b"\x06\x02\x86\x01",
        '<doc Envelope="true" />',
    ),
    (
        "DictionaryAttribute 0x07",
        b"\x40"
        + chars("doc")
        + b"\x09"
        + chars("p")
        + chars(NS)
        + b"\x07"
        + chars("p")
        + b"\x02\x80\x01",
        f'<doc xmlns:ns0="{NS}" ns0:Envelope="0" />',
    ),
    (
        "PrefixDictionaryAttributeI 0x14",
        b"\x40" + chars("doc") + b"\x0b" + chars("i") + b"\xf2\x06\x14" + b"\xf6\x06\x86\x01",
        '<doc xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true" />',
    ),
    (
        "PrefixAttributeB 0x27",
        b"\x40"
        + chars("doc")
        + b"\x09"
        + chars("b")
        + chars(NS)
        + b"\x27"
        + chars("x")
        + b"\x82\x01",
        f'<doc xmlns:ns0="{NS}" ns0:x="1" />',
    ),
    # xmlns
    # (ElementTree writes a default namespace with a generated prefix: same infoset.)
    (
        "ShortXmlnsAttribute 0x08",
        b"\x40" + chars("doc") + b"\x08" + chars(NS) + b"\x01",
        f'<ns0:doc xmlns:ns0="{NS}" />',
    ),
    (
        "ShortDictionaryXmlnsAttribute 0x0A",
        b"\x40" + chars("doc") + b"\x0a\x04\x01",
        '<ns0:doc xmlns:ns0="http://www.w3.org/2003/05/soap-envelope" />',
    ),
    # text
    ("ZeroText 0x80", b"\x40" + chars("a") + b"\x81", "<a>0</a>"),
    ("OneText 0x82", b"\x40" + chars("a") + b"\x83", "<a>1</a>"),
    ("FalseText 0x84", b"\x40" + chars("a") + b"\x85", "<a>false</a>"),
    ("TrueText 0x86", b"\x40" + chars("a") + b"\x87", "<a>true</a>"),
    ("Int8Text 0x88", b"\x40" + chars("a") + b"\x89\xde", "<a>-34</a>"),
    ("Int16Text 0x8A", b"\x40" + chars("a") + b"\x8b\x00\x80", "<a>-32768</a>"),
    (
        "Int32Text 0x8C",
        b"\x40" + chars("a") + b"\x8d" + struct.pack("<i", 2147483647),
        "<a>2147483647</a>",
    ),
    (
        "Int64Text 0x8E",
        b"\x40" + chars("a") + b"\x8f" + struct.pack("<q", 9007199254740993),
        "<a>9007199254740993</a>",
    ),
    ("FloatText 0x90", b"\x40" + chars("a") + b"\x91" + struct.pack("<f", 3.14), "<a>3.14</a>"),
    ("DoubleText 0x92", b"\x40" + chars("a") + b"\x93" + struct.pack("<d", 0.1), "<a>0.1</a>"),
    (
        "DoubleText infinity",
        b"\x40" + chars("a") + b"\x93" + struct.pack("<d", float("-inf")),
        "<a>-INF</a>",
    ),
    (
        "DecimalText 0x94",
        b"\x40"
        + chars("a")
        + b"\x95"
        + b"\x00\x00\x04\x80"
        + (0).to_bytes(4, "little")
        + (123456).to_bytes(8, "little"),
        "<a>-12.3456</a>",
    ),
    (
        "DateTimeText 0x96 UTC",
        b"\x40" + chars("a") + b"\x97" + struct.pack("<Q", 638712864012340000 | (1 << 62)),
        "<a>2025-01-01T00:00:01.234Z</a>",
    ),
    (
        # As the .NET binary writer (Mono's, from the reference source) wrote a DateTime of kind
        # Local, noon on 2025-01-01 in UTC-8: UTC ticks (20:00) under kind bits 2, ToBinary().
        "DateTimeText 0x96 local",
        bytes.fromhex("40 01 64 97 00 60 89 df 9e 2a dd 88"),
        "<d>2025-01-01T20:00:00Z</d>",
    ),
    (
        "DateTimeText 0x96 unspecified",
        b"\x40" + chars("a") + b"\x97" + struct.pack("<Q", 0),
        "<a>0001-01-01T00:00:00</a>",
    ),
    ("Chars8Text 0x98", b"\x40" + chars("a") + b"\x99" + chars("hello"), "<a>hello</a>"),
    ("Chars16Text 0x9A", b"\x40" + chars("a") + b"\x9b\x05\x00hello", "<a>hello</a>"),
    ("Chars32Text 0x9C", b"\x40" + chars("a") + b"\x9d\x05\x00\x00\x00hello", "<a>hello</a>"),
    ("Bytes8Text 0x9E", b"\x40" + chars("a") + b"\x9f\x03\x00\x01\x02", "<a>AAEC</a>"),
    ("Bytes16Text 0xA0", b"\x40" + chars("a") + b"\xa1\x03\x00\x00\x01\x02", "<a>AAEC</a>"),
    ("Bytes32Text 0xA2", b"\x40" + chars("a") + b"\xa3\x03\x00\x00\x00\x00\x01\x02", "<a>AAEC</a>"),
    (
        "StartListText 0xA4 / EndListText 0xA6",
        b"\x40" + chars("a") + b"\xa4\x82\x86\x98" + chars("x") + b"\xa6\x01",
        "<a>1 true x</a>",
    ),
    ("EmptyText 0xA8", b"\x40" + chars("a") + b"\xa9", "<a />"),
    ("DictionaryText 0xAA", b"\x40" + chars("a") + b"\xab\x02", "<a>Envelope</a>"),
    (
        "UniqueIdText 0xAC",
        b"\x40" + chars("a") + b"\xad" + UUID("33221100-5544-7766-8899-aabbccddeeff").bytes_le,
        "<a>urn:uuid:33221100-5544-7766-8899-aabbccddeeff</a>",
    ),
    (
        "TimeSpanText 0xAE",
        b"\x40" + chars("a") + b"\xaf" + struct.pack("<q", 5_400_000_0000 + 5_000_000),
        "<a>PT1H30M0.5S</a>",
    ),
    (
        "UuidText 0xB0",
        b"\x40" + chars("a") + b"\xb1" + UUID("33221100-5544-7766-8899-aabbccddeeff").bytes_le,
        "<a>33221100-5544-7766-8899-aabbccddeeff</a>",
    ),
    (
        "UInt64Text 0xB2",
        b"\x40" + chars("a") + b"\xb3" + struct.pack("<Q", 2**64 - 1),
        "<a>18446744073709551615</a>",
    ),
    ("BoolText 0xB4", b"\x40" + chars("a") + b"\xb5\x01", "<a>true</a>"),
    (
        "UnicodeChars8Text 0xB6",
        b"\x40" + chars("a") + b"\xb7\x04" + "hé".encode("utf-16-le"),
        "<a>hé</a>",
    ),
    (
        "UnicodeChars16Text 0xB8",
        b"\x40" + chars("a") + b"\xb9\x04\x00" + "hé".encode("utf-16-le"),
        "<a>hé</a>",
    ),
    (
        "UnicodeChars32Text 0xBA",
        b"\x40" + chars("a") + b"\xbb\x04\x00\x00\x00" + "hé".encode("utf-16-le"),
        "<a>hé</a>",
    ),
    ("QNameDictionaryText 0xBC", b"\x40" + chars("a") + b"\xbd\x08\x86\x07", "<a>i:int</a>"),
    ("Comment 0x02", b"\x40" + chars("a") + b"\x02" + chars("note") + b"\x01", "<a />"),
    ("Array 0x03", b"\x03\x40" + chars("i") + b"\x01\x8d\x03" + struct.pack("<3i", 1, 2, 3), None),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b, e) for _, b, e in RECORD_EXAMPLES],
    ids=[name for name, _, _ in RECORD_EXAMPLES],
)
def test_record_examples(body: bytes, expected: str | None) -> None:
    if expected is None:  # an Array stands for several sibling elements: wrap it
        wrapped = b"\x40" + chars("r") + body + b"\x01"
        assert xml(wrapped) == "<r><i>1</i><i>2</i><i>3</i></r>"
        return
    assert xml(body) == expected


@pytest.mark.parametrize(
    ("body", "reason_text"),
    [
        (b"\x40\x05doc", "needs 5 bytes"),
        (b"\x40", "the middle of a record"),
        (b"\x40" + chars("doc"), "before its elements are closed"),
        (b"\x40" + chars("a") + b"\x99\x10ab", "needs 16 bytes"),
        (b"\x42\x81\x01\x01", "dictionary string 129"),
        (b"\x42\xfe\x07\x01", "not in the static dictionary"),
        (b"\x40" + chars("a") + b"\x78\x01", "0x78"),
        (b"\x01", "closes no element"),
        (b"\x40" + chars("a") + b"\x01\x40" + chars("b") + b"\x01", "exactly one root"),
        (b"\x40" + chars("a") + b"\x97" + struct.pack("<Q", 3 << 62), "reserved kind"),
        (b"\x40" + chars("a") + b"\x95" + b"\x00\x00\x1d\x00" + bytes(12), "scale 29"),
        (b"\x42\xff\xff\xff\xff\x7f", "exceeds 31 bits"),
        (b"\x5e" + chars("a") + b"\x01", "prefix 'a' is not declared"),
        (b"\x03\x40" + chars("i") + b"\x01\x8d\xff\xff\x03", "longer than the body"),
    ],
)
def test_broken_bodies_say_what_is_wrong(body: bytes, reason_text: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        read_binary(body)
    assert caught.value.reason == "InvalidBinaryXml"
    assert reason_text in caught.value.message


def test_nesting_is_bounded() -> None:
    body = (b"\x40" + chars("a")) * 500 + b"\x01" * 500
    with pytest.raises(InvalidMessage) as caught:
        parse_context(body, "application/msbin1")
    assert caught.value.reason == "TooDeep"
