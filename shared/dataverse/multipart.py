"""The `multipart/mixed` bodies of `$batch`: writing requests and reading responses.

A batch body is a MIME multipart document whose parts are whole HTTP messages
(`Content-Type: application/http`); a change set is a nested multipart whose requests succeed
or fail together. Both directions are plain text with CRLF line ends, as the OData 4.0
multipart format asks; the tests check what is written with the standard library's MIME parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CRLF = "\r\n"


@dataclass
class HttpPart:
    """One HTTP message inside a batch: a request when writing, a response when reading."""

    method: str = ""
    url: str = ""
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_id: str | None = None
    # When reading: the change set this part belonged to (None outside change sets).
    changeset: str | None = None


def write_http_part(part: HttpPart) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if part.content_id is not None:
        lines.append(f"Content-ID: {part.content_id}")
    lines.append("")
    lines.append(f"{part.method} {part.url} HTTP/1.1")
    lines.extend(f"{name}: {value}" for name, value in part.headers.items())
    lines.append("")
    return CRLF.join(lines) + CRLF + part.body.decode("utf-8")


def write_batch(boundary: str, items: Sequence[HttpPart | tuple[str, Sequence[HttpPart]]]) -> bytes:
    """`items` holds requests outside change sets and `(changeset_boundary, requests)` pairs."""
    chunks: list[str] = []
    for item in items:
        chunks.append(f"--{boundary}{CRLF}")
        if isinstance(item, HttpPart):
            chunks.append(write_http_part(item) + CRLF)
            continue
        changeset, requests = item
        chunks.append(f"Content-Type: multipart/mixed; boundary={changeset}{CRLF}{CRLF}")
        for request in requests:
            chunks.append(f"--{changeset}{CRLF}")
            chunks.append(write_http_part(request) + CRLF)
        chunks.append(f"--{changeset}--{CRLF}")
    chunks.append(f"--{boundary}--{CRLF}")
    return "".join(chunks).encode("utf-8")


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def boundary_of(content_type: str) -> str:
    found = _BOUNDARY.search(content_type)
    if found is None or "multipart/" not in content_type.lower():
        raise ValueError(f"not a multipart content type: {content_type!r}")
    return found.group(1).strip()


def split_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body as (headers with lower-case names, content). Splitting on
    the boundary directly: the standard library's MIME parser takes milliseconds per part,
    which is most of the cost of a 1000-request batch."""
    delimiter = b"--" + boundary_of(content_type).encode()
    segments = body.split(delimiter)
    if len(segments) < 2:
        raise ValueError("the multipart body has no part")
    parts: list[tuple[dict[str, str], bytes]] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            return parts  # the closing delimiter
        if segment.startswith(b"\r\n"):
            segment = segment[2:]
        elif segment.startswith(b"\n"):
            segment = segment[1:]
        head, content = _split_head(segment)
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        parts.append((head, content))
    raise ValueError("the multipart body has no closing delimiter")


def _split_head(block: bytes) -> tuple[dict[str, str], bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, rest = block.partition(separator)
        if found:
            break
    else:
        head, rest = block, b""
    headers: dict[str, str] = {}
    for line in head.decode("utf-8").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def read_parts(content_type: str, body: bytes, *, responses: bool) -> list[HttpPart]:
    """Every HTTP message of a batch body in order, change-set members flattened and marked
    with their change set's boundary."""
    parts: list[HttpPart] = []
    for headers, content in split_multipart(content_type, body):
        inner_type = headers.get("content-type", "")
        if inner_type.lower().startswith("multipart/"):
            changeset = boundary_of(inner_type)
            for inner_headers, inner in split_multipart(inner_type, content):
                parts.append(_read_http(inner_headers, inner, responses, changeset))
        else:
            parts.append(_read_http(headers, content, responses, None))
    return parts


def _read_http(
    mime_headers: Mapping[str, str], content: bytes, responses: bool, changeset: str | None
) -> HttpPart:
    start, _, rest = content.lstrip(b"\r\n").partition(b"\n")
    words = start.decode("utf-8").strip().split(" ", 2)
    headers, body = _split_head(rest)
    part = HttpPart(
        headers={name: value for name, value in headers.items()},
        body=body.strip(),
        content_id=mime_headers.get("content-id"),
        changeset=changeset,
    )
    if len(words) < 2:
        raise ValueError(f"not an HTTP message: {start[:40]!r}")
    if responses:
        part.status = int(words[1])
    else:
        part.method, part.url = words[0], words[1]
    return part


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name in any letter case."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
