"""`$batch`: parts run in order, change sets all or nothing (a savepoint each), `$n`
references between the requests of one change set, and the multipart response; as the Web API
documents it ("Execute batch operations using the Web API")."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from shared.dataverse.multipart import HttpPart, read_parts
from tools.emulator.wire import (
    API_PREFIX,
    BAD_REQUEST,
    SEGMENT,
    Response,
    WebApiError,
    error_response,
    http_part,
)

if TYPE_CHECKING:
    from tools.emulator.app import DataverseEmulator


def run_batch(emulator: DataverseEmulator, headers: Mapping[str, str], body: bytes) -> Response:
    try:
        parts = read_parts(headers.get("content-type", ""), body, responses=False)
    except ValueError as error:
        raise WebApiError(400, BAD_REQUEST, f"The $batch body is not readable: {error}") from None
    continue_on_error = "odata.continue-on-error" in headers.get("prefer", "")
    inherited = {"authorization": headers.get("authorization", "")}
    boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[bytes] = []
    index = 0
    while index < len(parts):
        changeset = parts[index].changeset
        if changeset is None:
            response = _inner(emulator, parts[index], inherited, {})
            chunk, failed = http_part(response, None), response.status >= 400
            index += 1
        else:
            group = []
            while index < len(parts) and parts[index].changeset == changeset:
                group.append(parts[index])
                index += 1
            chunk, failed = _changeset(emulator, group, inherited)
        chunks.append(chunk)
        if failed and not continue_on_error:
            break
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + chunk for chunk in chunks)
    out += b"--" + boundary.encode() + b"--\r\n"
    response_headers = {
        "Content-Type": f"multipart/mixed; boundary={boundary}",
        "OData-Version": "4.0",
    }
    if continue_on_error:
        response_headers["Preference-Applied"] = "odata.continue-on-error"
    return Response(200, response_headers, out)


def _changeset(
    emulator: DataverseEmulator, requests: list[HttpPart], inherited: Mapping[str, str]
) -> tuple[bytes, bool]:
    references: dict[str, tuple[str, str]] = {}
    responses: list[tuple[Response, str | None]] = []
    pending = len(emulator._pending)
    try:
        with emulator.store.atomic():
            for request in requests:
                response = _inner(emulator, request, inherited, references)
                if response.status >= 400:
                    raise _ChangesetFailed(response)
                location = response.headers.get("OData-EntityId", "")
                match = SEGMENT.match(location.split(API_PREFIX)[-1]) if location else None
                if request.content_id and match and match.group("key"):
                    references["$" + request.content_id] = (
                        match.group("name"),
                        match.group("key"),
                    )
                responses.append((response, request.content_id))
    except _ChangesetFailed as failure:
        del emulator._pending[pending:]  # rolled back: nothing of it is posted
        return http_part(failure.response, None), True
    boundary = f"changesetresponse_{uuid.uuid4()}"
    inner_chunks = b"".join(
        b"--" + boundary.encode() + b"\r\n" + http_part(response, content_id)
        for response, content_id in responses
    )
    head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
    return head + inner_chunks + b"--" + boundary.encode() + b"--\r\n", False


def _inner(
    emulator: DataverseEmulator,
    request: HttpPart,
    inherited: Mapping[str, str],
    references: dict[str, tuple[str, str]],
) -> Response:
    headers = {**inherited, **{name.lower(): value for name, value in request.headers.items()}}
    split = urlsplit(request.url)
    path = unquote(split.path)
    resource = path.split(API_PREFIX, 1)[1] if API_PREFIX in path else path.lstrip("/")
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    try:
        return emulator._dispatch(
            request.method, resource, query, headers, request.body, references, in_batch=True
        )
    except WebApiError as error:
        return error_response(error)


class _ChangesetFailed(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# --- helpers ---------------------------------------------------------------------------------
