"""Reads the JSON format (DataContractJsonSerializer) into the neutral tree.

orjson parses the bytes, and its tree already is the neutral tree. One catch: orjson reads
non-integral numbers as doubles, and a Dataverse decimal or money amount may carry more digits
than a double holds (money goes to 922,337,203,685,477.5807). A double keeps every literal of up
to 15 significant digits exactly (through repr), so a body with a longer literal is read again,
exactly, with `parse_float=Decimal`. The check and the re-read run only when a collection is
first decoded: the header members never hold a fraction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from shared.errors import InvalidMessage

# Digits and dots become "0", everything else " ": 17 zeros in a row is a literal of 16 or more
# digits with a fraction (or a long digit run inside a string, which only costs the re-read).
_DIGITS_AND_DOTS = bytes(0x30 if chr(i) in "0123456789." else 0x20 for i in range(256))
_LONG_LITERAL = b"0" * 17


def read_json(body: bytes) -> tuple[Any, Callable[[], Mapping[str, Any]]]:
    """Returns the fast tree and a function giving the exact tree (the same one when no
    literal needs more than a double)."""
    if body[:3] == b"\xef\xbb\xbf":
        body = body[3:]
    try:
        tree = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "utf-8" in str(error).lower():
            raise InvalidMessage(
                "InvalidEncoding", f"the JSON body is not UTF-8: {error}"
            ) from None
        if "depth limit" in str(error).lower():
            raise InvalidMessage("TooDeep", "the JSON body is nested too deeply") from None
        raise InvalidMessage("InvalidJson", f"the body is not valid JSON: {error}") from None
    exact: list[Any] = []

    def resolve() -> Any:
        if not exact:
            needs_exact = _LONG_LITERAL in body.translate(_DIGITS_AND_DOTS)
            # orjson accepted these bytes, so the standard parser accepts them too.
            exact.append(json.loads(body, parse_float=Decimal) if needs_exact else tree)
        return exact[0]

    return tree, resolve
