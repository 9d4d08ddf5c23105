"""What a backfill writes: JSONL.gz part files, `summary.json` and `index.csv` (docs/backfill.md,
Output).

An output is a local folder (`file:///dir`) or an S3 prefix (`s3://bucket/prefix/`). The
output is chosen by whoever starts the run, on the command line, and only the backfill process
writes it, so it need not be in QRW_S3_BUCKETS / QRW_FILE_ROOTS: those allow-lists bound what a
*job* may make a worker read, and a producer writes job payloads. Any other scheme is refused.

Every file is written whole or not at all: locally to a temp file in the same folder, fsynced,
then renamed over the name; on S3 as one PutObject (a multipart upload, completed atomically,
only for a file larger than one upload chunk: a huge index.csv). A reader never sees half a
part, and rewriting a part (the runner does after a crash between writing a part and recording
it) replaces it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit

from worker import s3
from worker.backfill import BackfillError, StoredObject
from worker.engine.results import ScanResult
from worker.queue.results import ECHO_REFERENCE_CHARS, clip
from worker.settings import Settings

PART = re.compile(r"part-(\d{6,})\.jsonl\.gz")
SUMMARY = "summary.json"
INDEX = "index.csv"
INDEX_COLUMNS = (
    "key",
    "ok",
    "codes",
    "first_code_text",
    "error_code",
    "stages",
    "total_ms",
    # Of the first code with a payload (worker.schemes): what a person filtering invoices
    # wants without opening the parts. Appended, so the columns before keep their places.
    "scheme",
    "issuer_tax_id",
    "issue_date",
    "total",
    "currency",
    "payload_ok",
    # The first code's zxing-cpp content type: says whether first_code_text is text or the
    # code's bytes in base64 (BINARY_CONTENT).
    "content_type",
)
# The payload fields index.csv shows, by their names in `codes[].payload.fields`.
INDEX_PAYLOAD_FIELDS = ("issuer_tax_id", "issue_date", "total", "currency")

# The job-level fields of a result every line keeps: which job, worker and model read it.
JOB_FIELDS = ("job_id", "worker", "backend", "model", "finished_at")

# S3 writes and reads are tried this many times on a transient failure (worker.s3.call).
S3_ATTEMPTS = 5
# A file larger than this goes up as a multipart upload of chunks this size (S3's minimum
# chunk is 5 MiB); parts are far smaller and always go up as one PutObject.
UPLOAD_CHUNK = 16 * 1024 * 1024

# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection),
# the fullwidth and small forms included (some spreadsheets, in some locales, take U+FF1D
# for "=");
# QR payloads and object keys are text an outsider chose. Tab and CR never start a cell:
# they are escaped. A leading "'" is doubled, so that unescape_cell can tell the guard's.
_FORMULA_START = (
    *("=", "+", "-", "@"),
    *("\uff1d", "\uff0b", "\uff0d", "\uff20"),  # fullwidth
    *("\ufe66", "\ufe62", "\ufe63", "\ufe6b"),  # small
    "'",
)
# Escaped as \\, \n, \r, \t and \uXXXX, so that a row is one physical line for wc, grep and
# awk, and nothing in a cell is invisible or reorders what is shown: C0 and C1 controls
# (NEL, U+0085, ends a line for some tools), DEL, the line and paragraph separators, the
# bidirectional marks, embeddings, overrides and isolates, and the byte-order mark.
_CELL_ESCAPE = re.compile(
    r"[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CELL_UNESCAPE = re.compile(r"\\(u[0-9a-f]{4}|[\\nrt])")
_CELL_CHARS = 32_767  # Excel's limit per cell
# Content types (zxing-cpp's) whose text is not the code's data: index.csv shows their bytes.
BINARY_CONTENT = frozenset({"Binary", "Mixed", "UnknownECI"})
BASE64_MARK = "base64:"

T = TypeVar("T")


def part_name(seq: int) -> str:
    if seq < 0:
        raise ValueError(f"a part's sequence number is 0 or more, got {seq}")
    return f"part-{seq:06d}.jsonl.gz"


def open_output(url: str, settings: Settings) -> Output:
    """The output `url` names: `file:///dir` or `s3://bucket/prefix/`. Nothing is written yet
    (check_writable writes a probe)."""
    if not isinstance(url, str) or not url:
        raise BackfillError("--out: expected file:///dir or s3://bucket/prefix/")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise BackfillError(f"--out {url!r}: must not hold control characters")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise BackfillError(f"--out {url}: no ?query or #fragment")
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise BackfillError(f"--out {url}: expected file:///absolute/dir")
        if ".." in path.split("/"):
            raise BackfillError(f"--out {url}: '..' is not allowed")
        return LocalOutput(Path(path))
    if parts.scheme == "s3":
        # Only the one "/" after the bucket separates it from the prefix: S3 keys are opaque,
        # and a prefix starting "/" names other keys than the same without it.
        bucket, prefix = parts.netloc, unquote(parts.path).removeprefix("/")
        if not bucket:
            raise BackfillError(f"--out {url}: expected s3://bucket/prefix/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a prefix names a folder: s3://b/run1 writes s3://b/run1/part-...
        if "//" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise BackfillError(f"--out {url}: empty or '..' folders are not allowed")
        return S3Output(bucket, prefix, settings)
    raise BackfillError(f"--out {url}: only file:///dir and s3://bucket/prefix/ are accepted")


class Output(ABC):
    """One run's output folder. Subclasses supply the storage primitives."""

    url: str

    # Storage primitives --------------------------------------------------------------------

    @abstractmethod
    def _writer(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A binary file that becomes `name` whole when the block ends, and nothing if it
        raises."""

    @abstractmethod
    def _reader(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """The file `name`, opened for reading."""

    @abstractmethod
    def _names(self, prefix: str) -> Iterator[str]:
        """Names directly in the output starting with `prefix`."""

    @abstractmethod
    def _delete(self, name: str) -> None:
        """Remove `name`; absent is fine."""

    def _exists(self, name: str) -> bool:
        return name in self._names(name)

    # What a backfill does with them ---------------------------------------------------------

    def check_writable(self, *, fresh: bool = False) -> None:
        """Write and delete a probe; BackfillError with one line when that fails.

        `fresh`: also refuse an output that already holds a run's parts or summary (`start`
        passes it; `resume` does not), so two runs never mix their lines.
        """
        probe = f".qrw-probe-{uuid.uuid4().hex}"
        try:
            with self._writer(probe) as handle:
                handle.write(b"probe\n")
            self._delete(probe)
        except BackfillError as exc:
            raise BackfillError(f"--out {self.url} is not writable: {exc}") from None
        except OSError as exc:
            raise BackfillError(f"--out {self.url} is not writable: {_reason(exc)}") from None
        if fresh:
            taken = next(iter(self.parts()), None)
            if taken is not None or self._exists(SUMMARY):
                found = part_name(taken) if taken is not None else SUMMARY
                raise BackfillError(
                    f"--out {self.url} already holds a backfill's output ({found}): "
                    "give each run its own folder"
                )

    def parts(self) -> list[int]:
        """The sequence numbers of the parts written, in order (temp files are not parts)."""
        found = (PART.fullmatch(name) for name in self._names("part-"))
        return sorted(int(match.group(1)) for match in found if match)

    def write_part(self, seq: int, lines: list[dict[str, Any]]) -> None:
        """`part-<seq:06d>.jsonl.gz`, one JSON object per line, all or nothing; a part already
        under that name is replaced."""
        name = part_name(seq)
        with self._writer(name) as raw, _gzip_writer(raw) as packed:
            for line in lines:
                packed.write(encode_line(line))

    def iter_lines(self, below: int | None = None) -> Iterator[dict[str, Any]]:
        """Every line of every part in sequence order, streamed (one part's buffer at a time).

        `below`: only parts with a smaller sequence number (the ones the run has recorded), so a
        part written just before a crash and not yet recorded is left out."""
        for seq in self.parts():
            if below is not None and seq >= below:
                break
            yield from self._part_lines(part_name(seq))

    def _part_lines(self, name: str) -> Iterator[dict[str, Any]]:
        # A read cut off half-way (an S3 connection reset) starts the part again and skips
        # what was already yielded.
        done = 0
        retry = _retry()
        for attempt in range(1, retry.attempts + 1):
            try:
                with self._reader(name) as raw, _gzip_reader(raw) as text:
                    for number, text_line in enumerate(text):
                        if number < done:
                            continue
                        try:
                            line = json.loads(text_line)
                        except ValueError as exc:
                            raise BackfillError(
                                f"{self.url}{name} line {number + 1} is not JSON: {exc}"
                            ) from None
                        done += 1
                        yield line
                return
            except s3.BodyBroken as exc:
                if attempt == retry.attempts:
                    raise BackfillError(f"{self.url}{name} cannot be read: {exc}") from None
                retry.pause(attempt)
            except (OSError, EOFError) as exc:  # a missing or truncated part: not transient
                raise BackfillError(f"{self.url}{name} cannot be read: {exc}") from None

    def write_file(self, name: str, data: bytes) -> None:
        """Any other file of the run (a retry's manifest), written whole like a part."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a plain file name: {name!r}")
        with self._writer(name) as raw:
            raw.write(data)

    def write_summary(self, summary: dict[str, Any]) -> None:
        data = json.dumps(summary, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
        with self._writer(SUMMARY) as raw:
            raw.write(data.encode("utf-8", "replace"))

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as written, or None when the run has not written one."""
        if not self._exists(SUMMARY):
            return None
        with self._reader(SUMMARY) as raw:
            return json.loads(raw.read())

    def write_index(
        self,
        below: int | None = None,
        lines: Iterable[dict[str, Any]] | None = None,
        spool: IndexSpool | None = None,
    ) -> int:
        """index.csv from the parts (or from `lines`, a pass over them that also feeds the
        report), then the rows of `spool`, streamed; returns the rows written (header not
        counted)."""
        rows = 0
        with self._writer(INDEX) as raw:
            # UTF-8 with a byte-order mark: without one, Excel reads a CSV as the machine's
            # legacy code page and mangles every non-ASCII payload.
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            try:
                writer = _index_writer(text)
                writer.writerow(INDEX_COLUMNS)
                for line in self.iter_lines(below) if lines is None else lines:
                    writer.writerow(index_row(line))
                    rows += 1
                text.flush()
            finally:
                text.detach()  # the writer, not the wrapper, closes (and commits) the file
            if spool is not None:
                for chunk in spool.chunks():
                    raw.write(chunk)
                rows += spool.rows
        return rows

    def __str__(self) -> str:
        return self.url


class LocalOutput(Output):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"file://{folder.as_posix().rstrip('/')}/"

    def _ensure_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise BackfillError(f"{self.folder} exists and is not a folder") from None
        except OSError as exc:
            raise BackfillError(f"{self.folder} cannot be created: {_reason(exc)}") from None

    @contextlib.contextmanager
    def _writer(self, name: str) -> Iterator[IO[bytes]]:
        self._ensure_folder()
        # Same folder, so the rename is atomic; a leading dot and a suffix no part name has,
        # so a temp file left by a crash is never read as a part.
        temp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp"
        # Not a `with`: the file must be closed before the rename, and removed on failure.
        handle = open(temp, "xb")  # noqa: SIM115
        try:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temp, self.folder / name)
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
        _fsync_folder(self.folder)

    @contextlib.contextmanager
    def _reader(self, name: str) -> Iterator[IO[bytes]]:
        with open(self.folder / name, "rb") as handle:
            yield handle

    def _names(self, prefix: str) -> Iterator[str]:
        try:
            entries = os.scandir(self.folder)
        except FileNotFoundError:
            return
        with entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                    yield entry.name

    def _delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class S3Output(Output):
    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        self.bucket, self.prefix, self.settings = bucket, prefix, settings
        self.url = f"s3://{bucket}/{prefix}"

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        try:
            return s3.checked(f"{what} {self.url}", action, _retry())
        except s3.Failed as exc:
            raise BackfillError(str(exc)) from None

    @contextlib.contextmanager
    def _writer(self, name: str) -> Iterator[IO[bytes]]:
        upload = _S3Upload(self, self.prefix + name)
        try:
            yield upload
            upload.finish()
        except BaseException:
            upload.abort()
            raise

    @contextlib.contextmanager
    def _reader(self, name: str) -> Iterator[IO[bytes]]:
        key = self.prefix + name
        body, _ = self._retrying("reading", lambda: s3.open_body(self.bucket, key))
        try:
            yield body  # type: ignore[misc]
        finally:
            body.close()

    def _names(self, prefix: str) -> Iterator[str]:
        # Paginated by hand: a page that fails is asked for again, where a failed paginator
        # would just end, and the listing would look shorter than it is.
        token: str | None = None
        while True:
            page = self._retrying(
                "listing",
                lambda token=token: s3.list_page(
                    self.bucket, self.prefix + prefix, token=token, folders=False
                ),
            )
            for item in page.objects:
                yield item.key[len(self.prefix) :]
            if page.next_token is None:
                return
            token = page.next_token

    def _delete(self, name: str) -> None:
        key = self.prefix + name
        self._retrying("deleting from", lambda: s3.delete(self.bucket, key))


class _S3Upload(io.RawIOBase):
    """A write-only file that becomes one S3 object: one PutObject when it stays under
    UPLOAD_CHUNK, a multipart upload (completed at the end, aborted on failure) otherwise."""

    def __init__(self, output: S3Output, key: str) -> None:
        self.output, self.key = output, key
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.etags: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        while len(self.buffer) >= UPLOAD_CHUNK:
            self._send_chunk(bytes(self.buffer[:UPLOAD_CHUNK]))
            del self.buffer[:UPLOAD_CHUNK]
        return len(data)

    def _send_chunk(self, chunk: bytes) -> None:
        out = self.output
        if self.upload_id is None:
            self.upload_id = out._retrying(
                "writing to", lambda: s3.start_upload(out.bucket, self.key)
            )
        upload, number = self.upload_id, len(self.etags) + 1
        etag = out._retrying(
            "writing to", lambda: s3.send_part(out.bucket, self.key, upload, number, chunk)
        )
        self.etags.append(etag)

    def finish(self) -> None:
        out = self.output
        if self.upload_id is None:
            body = bytes(self.buffer)
            out._retrying("writing to", lambda: s3.put(out.bucket, self.key, body))
        else:
            if self.buffer:
                self._send_chunk(bytes(self.buffer))
            upload = self.upload_id
            out._retrying(
                "writing to",
                lambda: s3.complete_upload(out.bucket, self.key, upload, self.etags),
            )
        self.buffer = bytearray()

    def abort(self) -> None:
        if self.upload_id is not None:
            # Best effort: an upload left open costs storage until a lifecycle rule ends it.
            with contextlib.suppress(Exception):
                s3.abort_upload(self.output.bucket, self.key, self.upload_id)
        self.buffer = bytearray()


# Lines -------------------------------------------------------------------------------------


def encode_line(line: dict[str, Any]) -> bytes:
    # Compact, UTF-8 as is; json escapes every line break inside a string, so one line is one
    # object. A lone surrogate (never in a published result) becomes "?", not a crash.
    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace") + b"\n"


def _empty_item() -> dict[str, Any]:
    # The fields of an item that was never scanned, as the engine would write them.
    return ScanResult().to_dict()


def object_lines(result: dict[str, Any], objects: list[StoredObject]) -> list[dict[str, Any]]:
    """One output line per object from a job's published result document.

    A batch result's items are matched to the objects by position, and each item's `image`
    must be the object's reference (a mismatch is a bug and raises ResultMismatch). A job that
    failed before scanning (no `items`: invalid_payload, worker_lost, deadline_exceeded by the
    job's hard limit...) gives every object a line with the job's error and no codes.
    """
    job = {name: result.get(name) for name in JOB_FIELDS}
    items = result.get("items")
    if items is None:
        error = result.get("error")
        if not isinstance(error, dict) or "image" in result:
            raise ResultMismatch(
                f"job {result.get('job_id')}: a result with neither items nor a job-level error"
            )
        items = [{**_empty_item(), "ok": False, "error": error} for _ in objects]
        for item, stored in zip(items, objects, strict=True):
            item["image"] = stored.ref
    if not isinstance(items, list) or len(items) != len(objects):
        count = len(items) if isinstance(items, list) else type(items).__name__
        raise ResultMismatch(
            f"job {result.get('job_id')}: {count} items for {len(objects)} objects"
        )
    lines = []
    for number, (item, stored) in enumerate(zip(items, objects, strict=True)):
        echoed = item.get("image") if isinstance(item, dict) else None
        if echoed != clip(stored.ref, ECHO_REFERENCE_CHARS):
            raise ResultMismatch(
                f"job {result.get('job_id')}: item {number} is {echoed!r}, expected {stored.ref!r}"
            )
        line: dict[str, Any] = {"key": stored.key, "etag": stored.etag, "size": stored.size}
        line.update(item)
        line["image"] = stored.ref  # whole, where the echo may be cut at 1024 characters
        line.update(job)
        lines.append(line)
    return lines


class ResultMismatch(BackfillError):
    """A result whose items do not answer the objects its job was enqueued for: a bug."""


# index.csv ---------------------------------------------------------------------------------


class IndexSpool:
    """The index.csv rows of the parts one driver wrote, in order, kept zlib-compressed in
    memory (at most LIMIT bytes), so that a run that ends in the same process writes its
    index without reading every part again. Parts from before a resume, a part whose
    record the driver could not confirm, or a spool past its limit: `start` says so, and
    those parts are read again."""

    LIMIT = 8 * 1024 * 1024  # about half a million rows; past that the end reads the parts

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.rows = 0
        self.size = 0
        self.full = False
        self._packed: list[bytes] = []
        self._packer = zlib.compressobj(1)

    def add(self, seq: int, lines: list[dict[str, Any]]) -> None:
        """The rows of part `seq`, once its record in the run's state is confirmed."""
        if self.full:
            return
        if self.seqs and seq != self.seqs[-1] + 1:
            self.full = True  # a gap: which parts came between is not known here
            return
        text = io.StringIO(newline="")
        writer = _index_writer(text)
        for line in lines:
            writer.writerow(index_row(line))
        packed = self._packer.compress(text.getvalue().encode("utf-8", "replace"))
        self.size += len(packed)
        self._packed.append(packed)
        self.seqs.append(seq)
        self.rows += len(lines)
        if self.size > self.LIMIT:
            self.full, self._packed = True, []

    def start(self, below: int) -> int | None:
        """The first part the spool holds when it holds every part from there up to `below`;
        None when it cannot stand in for them."""
        if self.full or not self.seqs or self.seqs[-1] != below - 1:
            return None
        return self.seqs[0]

    def chunks(self) -> Iterator[bytes]:
        unpacker = zlib.decompressobj()
        for packed in self._packed:
            yield unpacker.decompress(packed)
        # A copy: flushing the packer itself would end the stream, and a finish that is
        # retried (paused while finishing) reads the spool again.
        yield unpacker.decompress(self._packer.copy().flush())


def _index_writer(text: IO[str]) -> Any:
    # LF row ends: with CRLF, awk and cut keep a CR on every row's last field. Spreadsheets
    # and CSV readers take either.
    return csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def _first_code(codes: list[Any]) -> tuple[str, str]:
    """(what index.csv shows of the first code's data, its content type)."""
    first = codes[0] if codes and isinstance(codes[0], dict) else {}
    content = str(first.get("content_type") or "")
    data = first.get("bytes_b64")
    if content in BINARY_CONTENT and isinstance(data, str) and data:
        # zxing-cpp's text of bytes that are no text is mojibake: show the bytes, marked.
        return BASE64_MARK + data, content
    text = first.get("text", "")
    return (text if isinstance(text, str) else str(text)), content


def index_row(line: dict[str, Any]) -> list[str]:
    codes = line.get("codes") or []
    first, content_type = _first_code(codes)
    error = line.get("error")
    total = (line.get("timings_ms") or {}).get("total")
    payload = next(
        (
            code["payload"]
            for code in codes
            if isinstance(code, dict) and isinstance(code.get("payload"), dict)
        ),
        None,
    )
    return [
        cell(str(line.get("key", ""))),
        "true" if line.get("ok") else "false",
        str(len(codes)),
        cell(first),
        cell(str(error.get("code", ""))) if isinstance(error, dict) else "",
        cell("+".join(str(stage) for stage in line.get("stages_run") or [])),
        f"{total:.1f}" if isinstance(total, int | float) and not isinstance(total, bool) else "",
        *_payload_cells(payload),
        cell(content_type),
    ]


def _payload_cells(payload: dict[str, Any] | None) -> list[str]:
    """scheme, the INDEX_PAYLOAD_FIELDS and payload_ok; all empty without a payload."""
    if payload is None:
        return [""] * (2 + len(INDEX_PAYLOAD_FIELDS))
    fields = payload.get("fields")
    fields = fields if isinstance(fields, dict) else {}
    return [
        cell(str(payload.get("scheme", ""))),
        *(cell(str(fields.get(name, ""))) for name in INDEX_PAYLOAD_FIELDS),
        "true" if payload.get("ok") else "false",
    ]


def cell(text: str) -> str:
    """Text a spreadsheet shows as text, on one line: escaped (_CELL_ESCAPE), never run as a
    formula (a leading "'"), within one cell's limit. unescape_cell gives the text back."""
    text = _CELL_ESCAPE.sub(_escape, text)
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text[:_CELL_CHARS]


def unescape_cell(text: str) -> str:
    """The text `cell` was given (for a cell it did not cut at 32,767 characters)."""
    if text.startswith("'") and text[1:].startswith(_FORMULA_START):
        text = text[1:]
    return _CELL_UNESCAPE.sub(_unescape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code.startswith("u"):
        return chr(int(code[1:], 16))
    return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[code]


# Helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _gzip_writer(raw: IO[bytes]) -> Iterator[IO[bytes]]:
    # mtime 0: the same lines make the same bytes, so a rewritten part is byte-identical.
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:
        yield packed  # type: ignore[misc]


@contextlib.contextmanager
def _gzip_reader(raw: IO[bytes]) -> Iterator[IO[str]]:
    packed = gzip.GzipFile(fileobj=raw, mode="rb")
    # newline="\n": a line is what encode_line ended with "\n", whatever else a string holds.
    text = io.TextIOWrapper(packed, encoding="utf-8", newline="\n")  # type: ignore[arg-type]
    try:
        yield text
    finally:
        text.close()


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _retry() -> s3.Retry:
    # Built when used, so that S3_ATTEMPTS is read then.
    return s3.Retry(attempts=S3_ATTEMPTS, base_s=0.25, cap_s=4.0)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
