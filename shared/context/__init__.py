"""Decode Dataverse service-endpoint messages into a typed `RemoteExecutionContext`.

    context = parse_context(body, content_type)

The content type picks the reader: `application/json` (DataContractJsonSerializer),
`application/xml` (DataContractSerializer) or `application/msbin1` (.NET binary XML, Dataverse's
default). Without a usable content type the body itself tells JSON from XML from binary. XML and
binary share one walk over the XML infoset; all three share one path for values. Anything that
is not a readable context raises `InvalidMessage` with a reason code; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from shared.errors import InvalidMessage

from .binary_reader import read_binary
from .execution import RemoteExecutionContext, from_tree
from .flow import context_tree, is_flow_row
from .json_reader import read_json
from .types import (
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
    UnknownValue,
)
from .xml_reader import read_element, read_xml

__all__ = [
    "AliasedValue",
    "BooleanManagedProperty",
    "DataContractValue",
    "Entity",
    "EntityCollection",
    "EntityReference",
    "EntityReferenceCollection",
    "Money",
    "OptionSetValue",
    "Relationship",
    "RemoteExecutionContext",
    "UnknownValue",
    "message_format",
    "parse_context",
    "parse_flow_row",
]

_JSON_TYPES = frozenset({"application/json", "text/json"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})
_BINARY_TYPES = frozenset({"application/msbin1"})
_WHITESPACE = b" \t\r\n"


def message_format(body: bytes, content_type: str | None = None) -> str:
    """`"json"`, `"xml"` or `"binary"`: from the content type, else from the body's first bytes."""
    if content_type:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type in _JSON_TYPES or media_type.endswith("+json"):
            return "json"
        if media_type in _XML_TYPES or media_type.endswith("+xml"):
            return "xml"
        if media_type in _BINARY_TYPES:
            return "binary"
    return _sniff(body)


def _sniff(body: bytes) -> str:
    start = body[3:4096] if body[:3] == b"\xef\xbb\xbf" else body[:4096]
    start = start.lstrip(_WHITESPACE)[:64]
    first = start[:1]
    if first in (b"{", b"["):
        return "json"
    if first == b"<":
        return "xml"
    # A binary XML document opens with an element record (0x40-0x77) followed by length bytes
    # and dictionary ids, which text never contains.
    if first and 0x40 <= first[0] <= 0x77 and any(byte < 0x09 for byte in start):
        return "binary"
    shown = start[:16].hex(" ")
    raise InvalidMessage(
        "NotAnExecutionContext",
        f"the body is neither JSON, XML nor .NET binary XML (first bytes: {shown})",
    )


def parse_flow_row(body: bytes, properties: Mapping[str, Any]) -> RemoteExecutionContext | None:
    """A Power Automate flow's trigger row (flow.py) as a context; None when the body is not
    one. `properties`: the message's application properties, keys in lower case."""
    try:
        tree = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not is_flow_row(tree):
        return None
    return from_tree(context_tree(tree, properties))


def parse_context(body: bytes | str, content_type: str | None = None) -> RemoteExecutionContext:
    """Decode a message body posted by a Dataverse service endpoint."""
    if type(body) is bytes:
        data = body
    else:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if not data[:256].strip(_WHITESPACE) and not data.strip(_WHITESPACE):
        raise InvalidMessage("EmptyBody", "the message body is empty")
    kind = message_format(data, content_type)
    if kind == "json":
        tree, exact = read_json(data)
        return from_tree(tree, exact)
    if kind == "binary":
        return from_tree(read_element(read_binary(data)))
    return from_tree(read_xml(data))
