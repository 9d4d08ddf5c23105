"""Reading a request's image: the raw body or one multipart file, never past the limit.

The size limit is enforced while the bytes arrive (and from Content-Length when the
client declares it), so an oversized upload is refused before it is buffered.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from worker.engine.errors import ErrorCode, ScanFailed

# Room for multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024


async def read_image(request: Request, max_bytes: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        raw = await _read_limited(request, max_bytes + _MULTIPART_OVERHEAD, max_bytes)
        return await _first_file(request, raw, max_bytes)
    return await _read_limited(request, max_bytes, max_bytes)


async def _read_limited(request: Request, limit: int, reported: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), reported)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, reported)
        chunks.append(chunk)
    return b"".join(chunks)


async def _first_file(request: Request, raw: bytes, max_bytes: int) -> bytes:
    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as exc:  # the parser's errors differ by version; all mean "malformed"
        raise ScanFailed(ErrorCode.INVALID_REQUEST, f"malformed multipart body: {exc}") from exc
    try:
        upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise ScanFailed(ErrorCode.INVALID_REQUEST, "the multipart body holds no file part")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def _too_large(size: int, limit: int) -> ScanFailed:
    return ScanFailed(
        ErrorCode.IMAGE_TOO_LARGE,
        f"the upload is over {limit} bytes (at least {size}); the limit is QRW_MAX_BYTES",
    )
