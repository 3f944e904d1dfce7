"""The Web API's wire for the emulator: error codes, errors and responses in the OData shape,
the request log, and the parsing of keys, literals and query options."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

API_PREFIX = "/api/data/v9.2/"
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
SEGMENT = re.compile(r"^(?P<name>[A-Za-z_$][\w.]*)(?:\((?P<key>[^)]*)\))?(?:/(?P<rest>.*))?$")

# Dataverse error codes the emulator answers with.
NOT_FOUND = "0x80040217"  # ObjectDoesNotExist
SEGMENT_NOT_FOUND = "0x8006088a"  # Resource not found for the segment (Learn)
VERSION_MISMATCH = "0x80060882"  # ConcurrencyVersionMismatch
DUPLICATE = "0x80040237"  # DuplicateRecord
BAD_REQUEST = "0x80048d19"
THROTTLED = "0x80072322"  # number of requests exceeded the limit
UNAVAILABLE = "0x80040216"


class WebApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # below /api/data/v9.2/
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    in_batch: bool

    @property
    def tag(self) -> str | None:
        return self.query.get("tag")


REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag_of(version: int) -> str:
    return f'W/"{version}"'


def json_body(body: bytes) -> dict[str, Any]:
    try:
        loaded = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise WebApiError(
            400, BAD_REQUEST, f"The request body is not valid JSON: {error}"
        ) from None
    if not isinstance(loaded, dict):
        raise WebApiError(400, BAD_REQUEST, "The request body must be a JSON object")
    return loaded


def json_response(status: int, body: Any) -> Response:
    return Response(
        status,
        {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"},
        orjson.dumps(body),
    )


def error_response(error: WebApiError) -> Response:
    request_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "x-ms-service-request-id": request_id,
        "REQ_ID": request_id,
        **error.headers,
    }
    body = {"error": {"code": error.code, "message": error.message}}
    return Response(error.status, headers, orjson.dumps(body))


def http_part(response: Response, content_id: str | None) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + response.body + b"\r\n"


def parse_literal(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw in ("true", "false"):
        return raw == "true"
    if raw == "null":
        return None
    if GUID.fullmatch(raw):
        return raw.lower()
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw


def parse_key(key: str) -> dict[str, Any]:
    """`name='a',number=2` -> {"name": "a", "number": 2} (commas inside quotes allowed)."""
    found: dict[str, Any] = {}
    for part in split_top_level(key):
        column, _, value = part.partition("=")
        if not column or not value:
            raise WebApiError(400, BAD_REQUEST, f"Cannot read the key '{key}'")
        found[column.strip()] = parse_literal(value)
    return found


def split_top_level(text: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def select_columns(select: str | None) -> list[str] | None:
    return [column.strip() for column in select.split(",")] if select else None


def max_page_size(headers: Mapping[str, str]) -> int | None:
    match = re.search(r"odata\.maxpagesize=(\d+)", headers.get("prefer", ""))
    return int(match.group(1)) if match else None


def without_context(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("@odata.context", None)
    return row


def parse_navigation(rest: str) -> tuple[str, str | None, bool]:
    """`nav/$ref` -> (nav, None, True); `nav(<id>)/$ref` -> (nav, id, True);
    `nav` -> (nav, None, False)."""
    ref = rest.endswith("/$ref")
    if ref:
        rest = rest[: -len("/$ref")]
    name, _, inner = rest.partition("(")
    return name, inner.rstrip(")") or None, ref
