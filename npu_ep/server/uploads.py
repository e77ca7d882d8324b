"""A multipart form read as it arrives: the `file` part goes straight to a temporary file whose size is
checked on every chunk, the other fields stay small strings. The client's file name is kept only to
name the upload in messages; the temporary file's name is the server's own."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from npu_ep.server.errors import ApiError

FILE_FIELD = "file"
# Room for the form's other fields and part headers beside the file, when judging Content-Length.
_FORM_OVERHEAD = 256 * 1024
_MAX_FIELD_BYTES = 64 * 1024
_MAX_PARTS = 64
# After an upload is refused as too large, read and discard up to this many bytes more so the client
# gets the 413 instead of a reset connection mid-send; beyond it the connection is simply closed.
_DRAIN_BYTES = 64 * 1024 * 1024
# An extension is kept on the temporary file (a hint for the audio decoder) only when it looks like one.
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")
_UNPRINTABLE = re.compile(r"[^\w .,()+\-\[\]]")


@dataclass
class Form:
    """The parsed form: `fields` by name (repeated names keep every value) and the uploaded file."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    path: Path | None = None  # the temporary file; the caller removes it (see `discard`)
    filename: str = "upload"  # the client's name for it, made safe to print
    size: int = 0

    def value(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the file is larger than this server's upload limit of {limit / 1e6:g} MB "
                         "(send a shorter or compressed recording, or start the server with a larger --max-upload-mb)",
                    param=FILE_FIELD, code="file_too_large")


def display_name(filename: str) -> str:
    """The last component of a client's file name, printable and short: for messages, never for paths."""
    name = _UNPRINTABLE.sub("_", re.split(r"[\\/]", filename)[-1]).strip()
    return name[:80] or "upload"


async def read_form(request, limit: int, folder: Path) -> Form:
    """Parse `request`'s multipart body, writing the `file` part into `folder`; ApiError(400/413) when
    the body is not a form or the file passes `limit` bytes (checked while reading, so no more than
    `limit` bytes ever reach the disk)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(400, "send the request as multipart/form-data with the audio in a `file` field "
                            "(as OpenAI's clients and curl -F do)", param=FILE_FIELD, code="invalid_form")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + _FORM_OVERHEAD:
        raise too_large(limit)  # refused before a byte is read; uvicorn closes the connection

    form = Form()
    state = {"name": b"", "value": b"", "disposition": b"", "field": None, "data": bytearray(), "parts": 0}
    handle = None
    problem: list[ApiError] = []

    def fail(error: ApiError) -> None:
        if not problem:
            problem.append(error)

    def on_part_begin() -> None:
        state["disposition"], state["field"], state["data"] = b"", None, bytearray()
        state["parts"] += 1
        if state["parts"] > _MAX_PARTS:
            fail(ApiError(400, f"the form has more than {_MAX_PARTS} parts", code="invalid_form"))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        if state["name"].lower() == b"content-disposition":
            state["disposition"] = state["value"]
        state["name"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal handle
        _, options = parse_options_header(state["disposition"])
        name = options.get(b"name", b"").decode("utf-8", "replace")
        state["field"] = name
        if name == FILE_FIELD and b"filename" in options and not problem:
            if form.path is not None:
                fail(ApiError(400, "send one `file` per request", param=FILE_FIELD, code="invalid_form"))
                return
            form.filename = display_name(options[b"filename"].decode("utf-8", "replace"))
            suffix = _SUFFIX.search(form.filename)
            fd, path = tempfile.mkstemp(prefix="upload-", suffix=suffix.group(0).lower() if suffix else "", dir=folder)
            form.path = Path(path)
            handle = os.fdopen(fd, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if problem:
            return
        if handle is not None and state["field"] == FILE_FIELD:
            form.size += end - start
            if form.size > limit:
                fail(too_large(limit))
                return
            handle.write(data[start:end])
        elif len(state["data"]) + end - start > _MAX_FIELD_BYTES:
            fail(ApiError(400, f"the form field `{state['field']}` is longer than {_MAX_FIELD_BYTES // 1024} KB",
                          param=state["field"], code="invalid_form"))
        else:
            state["data"] += data[start:end]

    def on_part_end() -> None:
        nonlocal handle
        if handle is not None and state["field"] == FILE_FIELD:
            handle.close()
            handle = None
        elif state["field"] and not problem:
            form.fields.setdefault(state["field"], []).append(state["data"].decode("utf-8", "replace"))

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if problem:
                if received > limit + _FORM_OVERHEAD + _DRAIN_BYTES:
                    break
                continue
            try:
                parser.write(chunk)
            except Exception as error:  # python-multipart's parse errors: a malformed body
                fail(ApiError(400, f"the multipart form is malformed ({error})", code="invalid_form"))
        if not problem:
            try:
                parser.finalize()
            except Exception as error:
                fail(ApiError(400, f"the multipart form is malformed ({error})", code="invalid_form"))
    except BaseException:
        form.discard()
        raise
    finally:
        if handle is not None:
            handle.close()
    if problem:
        form.discard()
        raise problem[0]
    if form.path is None:
        raise ApiError(400, "no `file` in the form (attach the audio as the `file` field, e.g. curl -F file=@talk.wav)",
                       param=FILE_FIELD, code="missing_file")
    return form
