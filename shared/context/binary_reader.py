"""Reads the .NET Binary Format for XML ([MC-NBFX]; `application/msbin1`), Dataverse's default
service-endpoint format, into the same XML infoset the XML reader walks.

Each record becomes what DataContractSerializer would have written as text: elements and
attributes (short, prefixed, dictionary and letter-prefix forms), xmlns declarations, and every
text record, typed ones included (integers, booleans, floats, doubles, decimals, DateTime with
its kind bits, UniqueId, Guid, TimeSpan, bytes, chars, dictionary strings, QNames, lists), with
their `WithEndElement` variants, plus arrays. The XML reader then turns that infoset into the
neutral tree, so the three formats share one path for structure and one for values.

Dictionary strings resolve against the static dictionary of [MC-NBFS] as far as this module
carries it (`STATIC_DICTIONARY`); an id it cannot resolve is an `InvalidMessage`, never a
guess. Hostile bodies are bounded: nesting depth, record count, and every length is checked
against the bytes actually present before anything is allocated.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from xml.etree.ElementTree import Element

from shared.errors import InvalidMessage

from . import values
from .nbfs import STATIC_DICTIONARY

MAX_RECORDS = 1_000_000
# Array items in all of one body. An Array record's item costs one byte of body (a bool) but
# becomes an element of about 150 bytes: 977 KiB became a million elements, 117 MiB and 3.8 s.
# Contexts hold small arrays (a multi-select choice has at most a few hundred values); each
# item also counts as a record.
MAX_ARRAY_ITEMS = 65_536
_XMLNS = "http://www.w3.org/2000/xmlns/"
_DOTNET_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_TICKS_MASK = (1 << 62) - 1
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_INT16 = struct.Struct("<h")
_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_UINT16 = struct.Struct("<H")
_UINT64 = struct.Struct("<Q")


def _fail(message: str) -> InvalidMessage:
    return InvalidMessage("InvalidBinaryXml", message)


class _Reader:
    __slots__ = ("data", "end", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.end = len(data)

    def byte(self) -> int:
        position = self.position
        if position >= self.end:
            raise _fail(f"the body ends in the middle of a record (at byte {position})")
        self.position = position + 1
        return self.data[position]

    def take(self, count: int) -> bytes:
        position = self.position
        if count < 0 or position + count > self.end:
            raise _fail(f"a record needs {count} bytes at byte {position}, the body has fewer")
        self.position = position + count
        return self.data[position : position + count]

    def mb31(self) -> int:
        """MultiByteInt31: seven bits a byte, low first, at most five bytes."""
        result = 0
        for shift in (0, 7, 14, 21, 28):
            current = self.byte()
            if shift == 28 and current > 0x07:
                raise _fail(f"an integer at byte {self.position - 1} exceeds 31 bits")
            result |= (current & 0x7F) << shift
            if not current & 0x80:
                return result
        raise _fail(f"an integer at byte {self.position} runs past five bytes")

    def string(self) -> str:
        data, position = self.data, self.position
        if position < self.end and data[position] < 0x80:  # a one-byte length: most strings
            after = position + 1 + data[position]
            if after <= self.end:
                self.position = after
                try:
                    return data[position + 1 : after].decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail(f"a string before byte {after} is not UTF-8") from None
        length = self.mb31()
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(f"a string before byte {self.position} is not UTF-8") from None

    def dictionary(self) -> str:
        key = self.mb31()
        found = STATIC_DICTIONARY.get(key)
        if found is None:
            if key & 1:
                raise _fail(
                    f"dictionary string {key} belongs to a session dictionary, which a "
                    "service-endpoint message does not carry"
                )
            raise _fail(f"dictionary string {key} is not in the static dictionary")
        return found


def _guid(raw: bytes) -> str:
    return str(UUID(bytes_le=raw))


def _float_text(value: float, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    if not single:
        return repr(value)
    for precision in range(6, 10):  # the shortest text that reads back as the same float32
        text = f"{value:.{precision}g}"
        if _FLOAT.unpack(_FLOAT.pack(float(text)))[0] == value:
            return text
    return repr(value)


def _decimal_text(raw: bytes) -> str:
    """[MS-OAUT] DECIMAL: reserved (2), scale (1), sign (1), Hi32 (4), Lo64 (8)."""
    scale, sign = raw[2], raw[3]
    if scale > 28:
        raise _fail(f"a decimal has scale {scale}; at most 28 is valid")
    magnitude = (int.from_bytes(raw[4:8], "little") << 64) | int.from_bytes(raw[8:16], "little")
    value = Decimal(magnitude).scaleb(-scale)
    return str(-value if sign & 0x80 else value)


def _datetime_text(raw: bytes) -> str:
    """Ticks (100 ns since 0001-01-01) in the low 62 bits, the kind in the top two: 0
    unspecified, 1 UTC, 2 local. .NET stores local times as their UTC ticks (DateTime.ToBinary),
    so every kind reads as UTC here."""
    number = _UINT64.unpack(raw)[0]
    ticks = number & _TICKS_MASK
    kind = number >> 62
    if kind == 3:
        raise _fail("a DateTime has the reserved kind 3")
    try:
        moment = _DOTNET_EPOCH + timedelta(microseconds=ticks // 10)
    except OverflowError:
        raise _fail(f"a DateTime of {ticks} ticks is out of range") from None
    fraction = ticks % 10_000_000
    text = (  # strftime would write year 1 as "1"
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if fraction:
        text += f".{fraction:07d}".rstrip("0")
    return text + ("Z" if kind else "")


def _timespan_text(raw: bytes) -> str:
    """As xs:duration, the way XmlConvert writes a TimeSpan."""
    ticks = _INT64.unpack(raw)[0]
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    days, ticks = divmod(ticks, 864_000_000_000)
    hours, ticks = divmod(ticks, 36_000_000_000)
    minutes, ticks = divmod(ticks, 600_000_000)
    seconds, fraction = divmod(ticks, 10_000_000)
    text = f"{sign}P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or fraction:
        time += f"{seconds}" + (f".{fraction:07d}".rstrip("0") if fraction else "") + "S"
    if time:
        text += "T" + time
    return text if text not in ("P", "-P") else "PT0S"


# Text records (0x80-0xBD): record type without its WithEndElement bit -> fixed size, or None for
# records that carry their own length or are handled apart.
_FIXED_TEXT: dict[int, tuple[int, Callable[[bytes], str]]] = {
    0x88: (1, lambda raw: str(int.from_bytes(raw, "little", signed=True))),
    0x8A: (2, lambda raw: str(_INT16.unpack(raw)[0])),
    0x8C: (4, lambda raw: str(_INT32.unpack(raw)[0])),
    0x8E: (8, lambda raw: str(_INT64.unpack(raw)[0])),
    0x90: (4, lambda raw: _float_text(_FLOAT.unpack(raw)[0], single=True)),
    0x92: (8, lambda raw: _float_text(_DOUBLE.unpack(raw)[0], single=False)),
    0x94: (16, _decimal_text),
    0x96: (8, _datetime_text),
    0xAC: (16, lambda raw: "urn:uuid:" + _guid(raw)),
    0xAE: (8, _timespan_text),
    0xB0: (16, _guid),
    0xB2: (8, lambda raw: str(_UINT64.unpack(raw)[0])),
    0xB4: (1, lambda raw: "true" if raw[0] else "false"),
}
_CONSTANT_TEXT = {0x80: "0", 0x82: "1", 0x84: "false", 0x86: "true", 0xA8: ""}
# Types an Array record may hold (their WithEndElement form appears in the record).
_ARRAY_TYPES = {0xB5, 0x8B, 0x8D, 0x8F, 0x91, 0x93, 0x95, 0x97, 0xAF, 0xB1}


def _text(reader: _Reader, record: int) -> str:
    """The text of a text record (record without its WithEndElement bit)."""
    constant = _CONSTANT_TEXT.get(record)
    if constant is not None:
        return constant
    fixed = _FIXED_TEXT.get(record)
    if fixed is not None:
        size, convert = fixed
        return convert(reader.take(size))
    if record in (0x98, 0x9A, 0x9C):  # Chars8/16/32Text: UTF-8
        length = _length(reader, record - 0x98)
        try:
            return reader.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(f"text before byte {reader.position} is not UTF-8") from None
    if record in (0x9E, 0xA0, 0xA2):  # Bytes8/16/32Text: base64, as XML carries bytes
        return base64.b64encode(reader.take(_length(reader, record - 0x9E))).decode("ascii")
    if record in (0xB6, 0xB8, 0xBA):  # UnicodeChars8/16/32Text: UTF-16LE
        raw = reader.take(_length(reader, record - 0xB6))
        try:
            return raw.decode("utf-16-le")
        except UnicodeDecodeError:
            raise _fail(f"text before byte {reader.position} is not UTF-16") from None
    if record == 0xAA:  # DictionaryText
        return reader.dictionary()
    if record == 0xBC:  # QNameDictionaryText: a prefix letter and a dictionary name
        letter = reader.byte()
        if letter > 25:
            raise _fail(f"a QName prefix index {letter} is past 'z'")
        return f"{chr(0x61 + letter)}:{reader.dictionary()}"
    if record == 0xA4:  # StartListText ... EndListText: items joined by spaces
        items: list[str] = []
        while True:
            item = reader.byte()
            if item == 0xA6:
                return " ".join(items)
            if item & 1 or not 0x80 <= item <= 0xBD or item == 0xA4:
                raise _fail(f"record 0x{item:02X} cannot stand in a list")
            items.append(_text(reader, item))
    raise _fail(f"record type 0x{record:02X} is not a text record")


def _length(reader: _Reader, width_code: int) -> int:
    """The length prefix of a Chars/Bytes record: 0 -> 1 byte, 2 -> 2 bytes, 4 -> 4 bytes."""
    if width_code == 0:
        return reader.byte()
    if width_code == 2:
        return int(_UINT16.unpack(reader.take(2))[0])
    length = int(_INT32.unpack(reader.take(4))[0])
    if length < 0:
        raise _fail("a text length is negative")
    return length


def read_binary(body: bytes) -> Element:
    """The root element of a binary XML document."""
    reader = _Reader(body)
    data, end = body, len(body)
    root = Element("document")
    stack: list[tuple[Element, dict[str, str] | None]] = [(root, None)]
    namespaces: dict[str, str] = {"xml": "http://www.w3.org/XML/1998/namespace"}
    limit = min(MAX_RECORDS, end)  # every record takes at least one byte
    records = array_items = 0
    position = 0
    # The frequent records are read inline, the position kept in a local; the rest go through
    # the reader's methods. Each branch leaves `position` at the next record.
    while position < end:
        records += 1
        if records > limit:
            raise _fail(f"the body holds more than {MAX_RECORDS} records")
        record = data[position]
        if (
            (record == 0x40 or 0x5E <= record <= 0x77)
            and position + 1 < end
            and data[position + 1] < 0x80
        ):
            # ShortElement or PrefixElementA-Z with a one-byte name length: most elements.
            length = data[position + 1]
            after = position + 2 + length
            if after > end:
                raise _fail(
                    f"a record needs {length} bytes at byte {position + 2}, the body has fewer"
                )
            if after >= end or not 0x04 <= data[after] <= 0x3F:  # no attributes follow
                if len(stack) > values.MAX_NESTING:
                    raise InvalidMessage(
                        "TooDeep", f"elements nest more than {values.MAX_NESTING} deep"
                    )
                try:
                    name = data[position + 2 : after].decode("utf-8")
                except UnicodeDecodeError:
                    raise _fail(f"a string before byte {after} is not UTF-8") from None
                namespace = namespaces.get("" if record == 0x40 else chr(record - 0x5E + 0x61))
                if namespace is None and record != 0x40:
                    raise _fail(f"element prefix {chr(record - 0x5E + 0x61)!r} is not declared")
                element = Element(f"{{{namespace}}}{name}" if namespace else name)
                stack[-1][0].append(element)
                stack.append((element, None))
                position = after
                continue
        if record == 0x01 and len(stack) > 1 and stack[-1][1] is None:  # EndElement
            stack.pop()
            position += 1
            continue
        if record == 0x99 and position + 1 < end and len(stack) > 1:
            # Chars8TextWithEndElement: a short text closing its element.
            length = data[position + 1]
            after = position + 2 + length
            if after > end:
                raise _fail(
                    f"a record needs {length} bytes at byte {position + 2}, the body has fewer"
                )
            try:
                text = data[position + 2 : after].decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(f"text before byte {after} is not UTF-8") from None
            current = stack[-1][0]
            current.text = (current.text or "") + text
            _close(stack, namespaces)
            position = after
            continue
        reader.position = position + 1
        if 0x40 <= record <= 0x77:  # an element
            if len(stack) > values.MAX_NESTING:
                raise InvalidMessage(
                    "TooDeep", f"elements nest more than {values.MAX_NESTING} deep"
                )
            element, saved = _element(reader, record, namespaces)
            stack[-1][0].append(element)
            stack.append((element, saved))
        elif record == 0x01:  # EndElement
            _close(stack, namespaces)
        elif 0x80 <= record <= 0xBD:
            text = _text(reader, record & 0xFE)
            current = stack[-1][0]
            if current is root:
                if text.strip():
                    raise _fail("text outside the root element")
            else:
                current.text = (current.text or "") + text
            if record & 1:  # WithEndElement
                _close(stack, namespaces)
        elif record == 0x03:
            items = _array(reader, stack, namespaces, array_items)
            array_items += items
            records += items
        elif record == 0x02:  # Comment
            reader.string()
        elif record <= 0x3F:
            raise _fail(
                f"an attribute record (0x{record:02X}) at byte {position} follows no element"
            )
        else:
            raise _fail(f"record type 0x{record:02X} at byte {position} is not defined")
        position = reader.position
    if len(stack) != 1:
        raise _fail("the body ends before its elements are closed")
    if len(root) != 1:
        raise _fail("the body does not hold exactly one root element")
    return root[0]


def _close(stack: list[tuple[Element, dict[str, str] | None]], namespaces: dict[str, str]) -> None:
    if len(stack) == 1:
        raise _fail("an EndElement record closes no element")
    _, saved = stack.pop()
    if saved is not None:  # restore the prefixes this element redeclared
        for prefix, previous in saved.items():
            if previous == "\0":
                namespaces.pop(prefix, None)
            else:
                namespaces[prefix] = previous


def _element(
    reader: _Reader, record: int, namespaces: dict[str, str]
) -> tuple[Element, dict[str, str] | None]:
    if record == 0x40:
        prefix, name = "", reader.string()
    elif record == 0x41:
        prefix, name = reader.string(), reader.string()
    elif record == 0x42:
        prefix, name = "", reader.dictionary()
    elif record == 0x43:
        prefix, name = reader.string(), reader.dictionary()
    elif record <= 0x5D:
        prefix, name = chr(record - 0x44 + 0x61), reader.dictionary()
    else:
        prefix, name = chr(record - 0x5E + 0x61), reader.string()
    attributes: list[tuple[str, str, str]] = []
    saved: dict[str, str] | None = None
    # Attribute records follow the element record directly (0x04-0x3F).
    while reader.position < reader.end and 0x04 <= reader.data[reader.position] <= 0x3F:
        kind = reader.byte()
        if 0x08 <= kind <= 0x0B:  # xmlns declarations
            declared = "" if kind in (0x08, 0x0A) else reader.string()
            uri = reader.string() if kind in (0x08, 0x09) else reader.dictionary()
            if saved is None:
                saved = {}
            saved.setdefault(declared, namespaces.get(declared, "\0"))
            namespaces[declared] = uri
            continue
        if kind == 0x04:
            attribute_prefix, attribute_name = "", reader.string()
        elif kind == 0x05:
            attribute_prefix, attribute_name = reader.string(), reader.string()
        elif kind == 0x06:
            attribute_prefix, attribute_name = "", reader.dictionary()
        elif kind == 0x07:
            attribute_prefix, attribute_name = reader.string(), reader.dictionary()
        elif kind <= 0x25:
            attribute_prefix, attribute_name = chr(kind - 0x0C + 0x61), reader.dictionary()
        else:
            attribute_prefix, attribute_name = chr(kind - 0x26 + 0x61), reader.string()
        value_record = reader.byte()
        if not 0x80 <= value_record <= 0xBD or value_record & 1:
            raise _fail(f"an attribute value is record 0x{value_record:02X}, not a text record")
        attributes.append((attribute_prefix, attribute_name, _text(reader, value_record)))
    namespace = namespaces.get(prefix)
    if namespace is None and prefix:
        raise _fail(f"element prefix {prefix!r} is not declared")
    element = Element(f"{{{namespace}}}{name}" if namespace else name)
    for attribute_prefix, attribute_name, text in attributes:
        if attribute_prefix:
            attribute_namespace = namespaces.get(attribute_prefix)
            if attribute_namespace is None:
                raise _fail(f"attribute prefix {attribute_prefix!r} is not declared")
            element.set(f"{{{attribute_namespace}}}{attribute_name}", text)
        else:
            element.set(attribute_name, text)
    return element, saved


def _array(
    reader: _Reader,
    stack: list[tuple[Element, dict[str, str] | None]],
    namespaces: dict[str, str],
    items_before: int,
) -> int:
    """Array: an element record, EndElement, a value type, a count, then that many values, each
    standing for a copy of the element holding it. Returns the count."""
    record = reader.byte()
    if not 0x40 <= record <= 0x77:
        raise _fail(f"an Array record starts with 0x{record:02X}, not an element")
    template, saved = _element(reader, record, namespaces)
    if reader.byte() != 0x01:
        raise _fail("an Array record's element is not closed at once")
    kind = reader.byte()
    if kind not in _ARRAY_TYPES:
        raise _fail(f"an Array record cannot hold values of type 0x{kind:02X}")
    count = reader.mb31()
    size = _FIXED_TEXT[kind & 0xFE][0]
    if count * size > reader.end - reader.position:
        raise _fail(f"an Array of {count} values is longer than the body")
    if items_before + count > MAX_ARRAY_ITEMS:
        raise _fail(f"the body's Array records hold more than {MAX_ARRAY_ITEMS} values")
    parent = stack[-1][0]
    for _ in range(count):
        item = Element(template.tag, template.attrib)
        item.text = _text(reader, kind & 0xFE)
        parent.append(item)
    _close([(parent, None), (template, saved)], namespaces)
    return count
