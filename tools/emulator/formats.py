"""The other two message formats a service endpoint can post in, written from the JSON context:
DataContractSerializer XML (messageformat 3) and .NET Binary XML (messageformat 1).

The XML follows DataContractSerializer's conventions for RemoteExecutionContext as Microsoft's
serializer writes them (tests/fixtures/contexts/*.xml, made by tools/fixturegen): parameter
collections of `KeyValuePairOfstringanyType` with `a:key` / `a:value`, `i:type` on polymorphic
values (`b:string`, `b:guid`, `b:dateTime`, `Entity`, ...), `i:nil` for nulls, image items as
`KeyValuePairOfstringEntitygUGIFE1S`. It covers the value types the emulator posts: text,
integers, booleans, GUIDs, dates, Entity, EntityReference, OptionSetValue and Money.

The binary form encodes that XML infoset as [MC-NBFX] records: elements and attributes by
name (short and single-letter-prefix forms), xmlns declarations, and text as Chars8/16/32Text.
A reader of .NET Binary XML reads it as it reads the serializer's own output (which uses
dictionary strings and typed records; those are optional in the format).
"""

from __future__ import annotations

import re
import struct
import xml.parsers.expat
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape, quoteattr

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
INSTANCE = "http://www.w3.org/2001/XMLSchema-instance"
GENERIC = "http://schemas.datacontract.org/2004/07/System.Collections.Generic"
SCHEMA = "http://www.w3.org/2001/XMLSchema"
SERIALIZATION = "http://schemas.microsoft.com/2003/10/Serialization/"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_JSON_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_PARAMETERS = {"InputParameters", "OutputParameters", "SharedVariables"}
_IMAGES = {"PreEntityImages", "PostEntityImages"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def xml_date(text: str) -> str:
    match = _JSON_DATE.match(text)
    if match is None:
        return text
    moment = _EPOCH + timedelta(milliseconds=int(match.group(1)))
    shown = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        shown += f".{moment.microsecond // 1000:03d}".rstrip("0")
    return shown + "Z"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return escape(xml_date(value))
    return escape(str(value))


def _element(name: str, value: Any) -> str:
    if value is None:
        return f'<{name} i:nil="true"/>'
    return f"<{name}>{_scalar(value)}</{name}>"


def _kind(value: Mapping[str, Any]) -> str:
    return str(value.get("__type", "")).split(":", 1)[0]


def _reference_members(value: Mapping[str, Any]) -> str:
    return (
        _element("Id", value.get("Id"))
        + f'<KeyAttributes xmlns:a="{GENERIC}"/>'
        + _element("LogicalName", value.get("LogicalName"))
        + _element("Name", value.get("Name"))
        + _element("RowVersion", value.get("RowVersion"))
    )


def _pairs(items: list[Mapping[str, Any]], item_name: str, typed: bool) -> str:
    out = []
    for item in items:
        key = f"<a:key>{escape(str(item['key']))}</a:key>"
        value = (
            _value(item.get("value")) if typed else f"<a:value>{_scalar(item['value'])}</a:value>"
        )
        out.append(f"<{item_name}>{key}{value}</{item_name}>")
    return "".join(out)


def _entity_members(value: Mapping[str, Any]) -> str:
    return (
        f'<Attributes xmlns:a="{GENERIC}">'
        + _pairs(value.get("Attributes", []), "KeyValuePairOfstringanyType", True)
        + "</Attributes>"
        + _element("EntityState", value.get("EntityState"))
        + f'<FormattedValues xmlns:a="{GENERIC}">'
        + _pairs(value.get("FormattedValues", []), "KeyValuePairOfstringstring", False)
        + "</FormattedValues>"
        + _element("Id", value.get("Id"))
        + f'<KeyAttributes xmlns:a="{GENERIC}">'
        + _pairs(value.get("KeyAttributes", []), "KeyValuePairOfstringanyType", True)
        + "</KeyAttributes>"
        + _element("LogicalName", value.get("LogicalName"))
        + f'<RelatedEntities xmlns:a="{GENERIC}"/>'
        + _element("RowVersion", value.get("RowVersion"))
    )


def _value(value: Any) -> str:
    """One `a:value`, typed as DataContractSerializer types an object member."""
    if value is None:
        return '<a:value i:nil="true"/>'
    if isinstance(value, bool):
        return _primitive("boolean", SCHEMA, "true" if value else "false")
    if isinstance(value, int):
        return _primitive("int", SCHEMA, str(value))
    if isinstance(value, float):
        return _primitive("double", SCHEMA, repr(value))
    if isinstance(value, str):
        if _GUID.match(value):
            return _primitive("guid", SERIALIZATION, value)
        if _JSON_DATE.match(value):
            return _primitive("dateTime", SCHEMA, xml_date(value))
        return _primitive("string", SCHEMA, escape(value))
    if isinstance(value, Mapping):
        kind = _kind(value)
        if kind == "Entity":
            return f'<a:value i:type="Entity">{_entity_members(value)}</a:value>'
        if kind == "EntityReference":
            return f'<a:value i:type="EntityReference">{_reference_members(value)}</a:value>'
        if kind in ("OptionSetValue", "Money"):
            return f'<a:value i:type="{kind}"><Value>{_scalar(value["Value"])}</Value></a:value>'
    raise ValueError(f"the emulator does not write {type(value).__name__} values as XML")


def _primitive(type_name: str, namespace: str, text: str) -> str:
    return f'<a:value i:type="b:{type_name}" xmlns:b="{namespace}">{text}</a:value>'


def _members(context: Mapping[str, Any]) -> str:
    out = []
    for name, value in context.items():
        if name in _PARAMETERS:
            inner = _pairs(value or [], "KeyValuePairOfstringanyType", True)
            out.append(f'<{name} xmlns:a="{GENERIC}">{inner}</{name}>')
        elif name in _IMAGES:
            items = "".join(
                f"<KeyValuePairOfstringEntitygUGIFE1S><a:key>{escape(str(item['key']))}</a:key>"
                f"<a:value>{_entity_members(item['value'])}</a:value>"
                "</KeyValuePairOfstringEntitygUGIFE1S>"
                for item in value or []
            )
            out.append(f'<{name} xmlns:a="{GENERIC}">{items}</{name}>')
        elif name == "OwningExtension":
            out.append(
                '<OwningExtension i:nil="true"/>'
                if value is None
                else f"<OwningExtension>{_reference_members(value)}</OwningExtension>"
            )
        elif name == "ParentContext":
            out.append(
                '<ParentContext i:nil="true"/>'
                if value is None
                else f"<ParentContext>{_members(value)}</ParentContext>"
            )
        else:
            out.append(_element(name, value))
    return "".join(out)


def to_xml(context: Mapping[str, Any]) -> bytes:
    """The context as DataContractSerializer XML (UTF-8, no declaration, as Dataverse posts)."""
    return (
        f"<RemoteExecutionContext xmlns={quoteattr(CONTRACTS)} xmlns:i={quoteattr(INSTANCE)}>"
        + _members(context)
        + "</RemoteExecutionContext>"
    ).encode("utf-8")


# --- .NET Binary XML ([MC-NBFX] records) -----------------------------------------------------

END_ELEMENT = 0x01
SHORT_ATTRIBUTE = 0x04
SHORT_XMLNS = 0x08
XMLNS = 0x09
PREFIX_ATTRIBUTE_A = 0x26
SHORT_ELEMENT = 0x40
PREFIX_ELEMENT_A = 0x5E
CHARS8, CHARS16, CHARS32 = 0x98, 0x9A, 0x9C
EMPTY_TEXT = 0xA8


def mb31(value: int) -> bytes:
    """[MC-NBFX]'s MultiByteInt31: 7 bits a byte, low first, the high bit for more."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return mb31(len(data)) + data


def _text_record(text: str, *, closes: bool = False) -> bytes:
    """Chars8/16/32Text, or EmptyText; `closes`: the WithEndElement form (record + 1)."""
    data = text.encode("utf-8")
    end = 1 if closes else 0
    if not data:
        return bytes([EMPTY_TEXT + end])
    if len(data) < 0x100:
        return bytes([CHARS8 + end, len(data)]) + data
    if len(data) < 0x10000:
        return bytes([CHARS16 + end]) + struct.pack("<H", len(data)) + data
    return bytes([CHARS32 + end]) + struct.pack("<i", len(data)) + data


def _prefixed(prefix: str, first: int) -> int | None:
    if len(prefix) == 1 and "a" <= prefix <= "z":
        return first + ord(prefix) - ord("a")
    return None


def to_binary(document: bytes) -> bytes:
    """An XML document as .NET Binary XML records (prefixes of one lower-case letter)."""
    out = bytearray()
    pending_text: list[str] = []

    def flush(closing: bool) -> bool:
        text = "".join(pending_text)
        pending_text.clear()
        if text:
            out.extend(_text_record(text, closes=closing))
            return closing
        return False

    def start(name: str, attributes: dict[str, str]) -> None:
        flush(False)
        prefix, _, local = name.rpartition(":")
        if not prefix:
            out.append(SHORT_ELEMENT)
            out.extend(_string(local))
        else:
            record = _prefixed(prefix, PREFIX_ELEMENT_A)
            if record is None:
                raise ValueError(f"prefix {prefix!r} has no single-letter record")
            out.append(record)
            out.extend(_string(local))
        for attribute, value in attributes.items():
            if attribute == "xmlns":
                out.append(SHORT_XMLNS)
                out.extend(_string(value))
            elif attribute.startswith("xmlns:"):
                out.append(XMLNS)
                out.extend(_string(attribute[6:]) + _string(value))
            else:
                prefix, _, local = attribute.rpartition(":")
                if prefix:
                    record = _prefixed(prefix, PREFIX_ATTRIBUTE_A)
                    if record is None:
                        raise ValueError(f"prefix {prefix!r} has no single-letter record")
                    out.append(record)
                else:
                    out.append(SHORT_ATTRIBUTE)
                out.extend(_string(local))
                out.extend(_text_record(value))

    def end(name: str) -> None:
        if not flush(True):
            out.append(END_ELEMENT)

    parser = xml.parsers.expat.ParserCreate()  # no namespace processing: keep the prefixes
    parser.buffer_text = True
    parser.ordered_attributes = False
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = pending_text.append
    parser.Parse(document, True)
    return bytes(out)
