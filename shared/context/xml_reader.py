"""Reads the XML format (DataContractSerializer) into the neutral tree of `values`.

DataContractSerializer writes members as elements named after them; a value whose runtime type
differs from its declared type carries `i:type` (`b:guid`, `b:dateTime`, `Entity`, ...), and a
null carries `i:nil="true"`. Collections are elements whose items are `KeyValuePairOf...`
elements with `key` and `value` children. Image items are named `KeyValuePairOfstringEntity`
plus a hash suffix, so items are recognised by their shape, never by exact name.

The reader walks elements by local name only: namespaces carry no information the model needs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree
from xml.parsers import expat

from shared.errors import InvalidMessage

from . import values

_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_TYPE = _XSI + "type"
_NIL = _XSI + "nil"

# Members that are `{"key", "value"}` collections, and members that are plain lists.
_PAIR_MEMBERS = frozenset(
    {
        "InputParameters",
        "OutputParameters",
        "SharedVariables",
        "PreEntityImages",
        "PostEntityImages",
        "Attributes",
        "FormattedValues",
        "KeyAttributes",
        "RelatedEntities",
    }
)
_LIST_MEMBERS = frozenset(
    {
        "Entities",
        "Columns",
        "AttributeExpressions",
        "Conditions",
        "Filters",
        "Orders",
        "LinkEntities",
        "Values",
    }
)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _int(text: str) -> int:
    return values.to_int(text)


def _bool(text: str) -> bool:
    return values.to_bool(text)


def _decimal(text: str) -> Decimal:
    return values.to_decimal(text)


def _datetime(text: str) -> datetime:
    return values.to_datetime(text)


def _bytes(text: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise values.invalid("base64 value", text) from None


# XML Schema and serialization primitives, by the local part of their `i:type`.
_PRIMITIVES: dict[str, Any] = {
    "string": str,
    "anyURI": str,
    "int": _int,
    "long": _int,
    "short": _int,
    "byte": _int,
    "unsignedInt": _int,
    "unsignedLong": _int,
    "unsignedShort": _int,
    "unsignedByte": _int,
    "char": lambda text: chr(_int(text)),
    "boolean": _bool,
    "decimal": _decimal,
    "double": _decimal,
    "float": _decimal,
    "dateTime": _datetime,
    "guid": values.to_uuid,
    "base64Binary": _bytes,
    "duration": str,
}


class _DtdFound(Exception):
    pass


def _refuse_dtd(*_: object) -> None:
    raise _DtdFound


def _check_no_dtd(body: bytes) -> None:
    """DataContractSerializer never writes a DTD, and without one no entity can expand. Asked
    of expat itself, in whatever encoding the body declares or its BOM says: a byte search for
    `<!DOCTYPE` missed UTF-16, where an internal entity expanded 208 KiB into 8.6 M characters.
    One pass of expat with no handler but these, in C: a fraction of the tree build after it."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    try:
        parser.Parse(body, True)
    except _DtdFound:
        raise InvalidMessage(
            "InvalidXml", "the XML body declares a DTD, which a context never has"
        ) from None
    except (expat.ExpatError, ValueError, LookupError) as error:
        raise InvalidMessage("InvalidXml", f"the body is not well-formed XML: {error}") from None


def read_xml(body: bytes) -> Any:
    _check_no_dtd(body)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise InvalidMessage("InvalidXml", f"the body is not well-formed XML: {error}") from None
    return read_element(root)


def read_element(root: ElementTree.Element) -> Any:
    """The neutral tree of a context's root element, however it was read (text or binary)."""
    name = _local(root.tag)
    if name != "RemoteExecutionContext":
        raise InvalidMessage(
            "NotAnExecutionContext",
            f"the XML root element is <{name}>, not <RemoteExecutionContext>",
        )
    return _struct(root, 0)


def _member(element: ElementTree.Element, nesting: int) -> Any:
    if nesting > values.MAX_NESTING:
        raise InvalidMessage("TooDeep", f"elements are nested more than {values.MAX_NESTING} deep")
    if element.get(_NIL) == "true":
        return None
    declared = element.get(_TYPE)
    if declared is not None:
        return _typed(element, declared.rpartition(":")[2], nesting)
    name = _local(element.tag)
    if name in _PAIR_MEMBERS:
        return [_pair(item, nesting + 1) for item in element]
    if name in _LIST_MEMBERS:
        return [_item(item, nesting + 1) for item in element]
    if len(element):
        return _struct(element, nesting)
    return element.text or ""


def _struct(element: ElementTree.Element, nesting: int) -> dict[str, Any]:
    return {_local(child.tag): _member(child, nesting + 1) for child in element}


def _pair(element: ElementTree.Element, nesting: int) -> dict[str, Any]:
    pair: dict[str, Any] = {}
    for child in element:
        pair[_local(child.tag)] = _member(child, nesting + 1)
    if "key" not in pair or "value" not in pair:
        raise InvalidMessage(
            "NotAnExecutionContext",
            f"collection item <{_local(element.tag)}> has no key and value",
        )
    return pair


def _item(element: ElementTree.Element, nesting: int) -> Any:
    """An array item: a typed value, or a declared-type object named after its type."""
    if element.get(_TYPE) is not None or element.get(_NIL) == "true" or not len(element):
        return _member(element, nesting)
    name = _local(element.tag)
    item = _struct(element, nesting)
    if name.startswith("KeyValuePairOf"):
        item["__type"] = name.rstrip("0123456789")
    elif name not in ("Entity", "ConditionExpression", "OrderExpression", "FilterExpression"):
        item["__type"] = name
    return item


def _typed(element: ElementTree.Element, type_name: str, nesting: int) -> Any:
    primitive = _PRIMITIVES.get(type_name)
    if primitive is not None:
        return primitive(element.text or "")
    if type_name.startswith("ArrayOf") or type_name in (
        "OptionSetValueCollection",
        "EntityReferenceCollection",
    ):
        return [_item(item, nesting + 1) for item in element]
    typed = _struct(element, nesting)
    typed["__type"] = type_name
    return typed
