"""OpenAI's Files API: ``/v1/files`` upload, list, get, content, delete.

Files are what a batch reads and writes (purpose ``batch`` in, ``batch_output``
out); a file uploaded with purpose ``batch`` is checked line by line at once,
so a malformed line is a 400 naming it before any batch is made from it.
"""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server.api.http import json_response, query_int
from server.api.multipart import parse_form
from server.errors import ApiError
from server.serving.batch_input import parse_batch_input
from server.tasks.files import FileStore, StoredFile

PURPOSES = ("batch", "batch_output", "user_data")
MAX_PER_PAGE = 10_000


def files_of(http: HttpRequest) -> FileStore:
    files: FileStore = http.app.state.files
    return files


async def upload_file(http: HttpRequest) -> Response:
    """Upload a file (multipart/form-data: file, purpose); purpose batch: a batch's input,
    one JSON request per line, checked now."""
    settings = http.app.state.registry.config.server
    try:
        form = parse_form(http.headers.get("content-type", ""), await http.body())
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    part, purpose = form.get("file"), form.get("purpose")
    if part is None or purpose is None:
        raise ApiError(400, "the form needs a file field and a purpose field (batch)")
    kind = purpose.data.decode(errors="replace")
    if kind not in PURPOSES:
        raise ApiError(400, f"purpose: one of {', '.join(PURPOSES)}, got {kind!r}")
    if len(part.data) > settings.max_file_bytes:
        raise ApiError(413, f"the file is larger than {settings.max_file_bytes} bytes; split it")
    if kind == "batch":
        try:
            parse_batch_input(part.data, endpoint=None, max_lines=settings.max_batch_requests)
        except ValueError as exc:
            raise ApiError(400, f"file {part.filename or 'file'}: {exc}") from None
    files = files_of(http)
    stored = await files.add(part.filename or "file", kind, part.data)
    return json_response(stored.as_openai(files.max_age_s))


async def list_files(http: HttpRequest) -> Response:
    """Files, newest first (purpose, limit)."""
    limit = query_int(http, "limit", MAX_PER_PAGE, 1, MAX_PER_PAGE)
    files = files_of(http)
    found = await files.newest_first(http.query_params.get("purpose"), limit)
    data = [file.as_openai(files.max_age_s) for file in found]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    body = {"object": "list", "data": data, "first_id": first, "last_id": last}
    return json_response(body | {"has_more": False})


async def get_file(http: HttpRequest) -> Response:
    """A file's record."""
    files = files_of(http)
    return json_response((await _file_or_404(http)).as_openai(files.max_age_s))


async def file_content(http: HttpRequest) -> Response:
    """A file's bytes (a batch's output or error file: JSON lines)."""
    file = await _file_or_404(http)
    data = await files_of(http).content(file)
    return Response(data, media_type="application/jsonl" if file.purpose != "user_data" else None)


async def delete_file(http: HttpRequest) -> Response:
    """Delete a file."""
    file_id = http.path_params["file_id"]
    if not await files_of(http).delete(file_id):
        raise _not_found(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})


async def _file_or_404(http: HttpRequest) -> StoredFile:
    file_id = http.path_params["file_id"]
    file = await files_of(http).get(file_id)
    if file is None:
        raise _not_found(file_id)
    return file


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, f"no file {file_id!r}; file ids come from POST /v1/files")
