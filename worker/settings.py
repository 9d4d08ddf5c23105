"""One settings object for the whole service, read from the environment.

Every knob lives here so that the engine, the queue worker, the HTTP shim and the
command line agree on one meaning per variable. Each field names its variable, its
meaning and its range in its metadata; a value outside the range raises SettingsError
with one line naming the variable, and `qrw` turns that into exit status 2. The README's
configuration table is generated from the same metadata (`python -m worker.settings`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from worker import rules


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


@dataclass(frozen=True, slots=True)
class Range:
    """The values one setting may take: `text` for people (the README's range column),
    `check` for the code. `check` returns the value, normalised, or raises ValueError with
    the rest of a sentence that starts with the variable's name ("must be ...")."""

    text: str
    check: Callable[[Any], Any]
    low: int | float | None = None  # numeric bounds, inclusive, where there are any
    high: int | float | None = None


def _env(name: str, doc: str, rule: Range) -> dict[str, Any]:
    return {"env": name, "doc": doc, "range": rule}


def _number(low: int | float, high: int | float, unit: str = "") -> Range:
    kind = int if isinstance(low, int) and isinstance(high, int) else float
    text = f"{low}..{high}" + (f" {unit}" if unit else "")

    def check(value: Any) -> Any:
        # bool is an int to Python, never to an operator; NaN fails every comparison.
        valid_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not valid_type or not low <= value <= high:
            raise ValueError(f"must be {text}, got {rules.quote(value)}")
        return value

    return Range(text, check, low, high)


def _one_of(*choices: str, fold_case: bool = False) -> Range:
    def check(value: Any) -> Any:
        folded = value.lower() if fold_case and isinstance(value, str) else value
        if folded not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {rules.quote(value)}")
        return folded

    return Range(", ".join(choices), check)


# Queue names become Redis keys (rq:queue:<name>), so they keep to a key-safe alphabet.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# S3's bucket naming rules (general purpose buckets): 3 to 63 lower-case letters, digits,
# dots and hyphens, starting and ending with a letter or digit.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REDIS_DB = re.compile(r"/?[0-9]{0,5}")
_HOST = re.compile(r"[A-Za-z0-9_.:%\[\]-]{1,253}")


def _queues(value: Any) -> tuple[str, ...]:
    names = tuple(value)
    if not names:
        raise ValueError("must name at least one queue")
    for name in names:
        if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
            raise ValueError(
                f"must hold queue names of letters, digits and - _ . only, got {rules.quote(name)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"names a queue twice: {rules.quote(','.join(names))}")
    return names


def _detector_models(value: Any) -> tuple[str, ...]:
    sizes = tuple(value)
    if not sizes or any(size not in ("small", "medium") for size in sizes):
        raise ValueError(f"must be small, medium or both, got {rules.quote(','.join(sizes))}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"names a size twice: {rules.quote(','.join(sizes))}")
    return sizes


def _s3_bucket(entry: Any) -> str:
    """`bucket` or `bucket/folder/...`, normalised so that a folder ends with '/': the
    storage layer then matches whole path segments (`in/` never admits `in-evil/`)."""
    if not isinstance(entry, str):
        raise ValueError(f"must hold bucket names, got {rules.quote(entry)}")
    bucket, _, prefix = entry.partition("/")
    try:
        ipaddress.ip_address(bucket)
        is_ip = True
    except ValueError:
        is_ip = False
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket or is_ip:
        raise ValueError(
            f"must hold S3 bucket names (3-63 of a-z 0-9 . -), optionally with a /folder/, "
            f"got {rules.quote(entry)}"
        )
    segments = prefix.split("/")
    if segments and segments[-1] == "":
        segments.pop()  # the trailing slash of a folder
    for segment in segments:
        if (
            segment in ("", ".", "..")
            or "*" in segment
            or not rules.text_ok(segment)
            or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in segment)
        ):
            raise ValueError(
                f"must name a folder as bucket/folder/ (no empty, '.', '..' or '*' parts), "
                f"got {rules.quote(entry)}"
            )
    return f"{bucket}/{'/'.join(segments)}/" if segments else bucket


def _s3_buckets(value: Any) -> tuple[str, ...]:
    return tuple(_s3_bucket(entry) for entry in value)


def _file_roots(value: Any) -> tuple[str, ...]:
    roots: list[str] = []
    for root in value:
        if not isinstance(root, str) or not os.path.isabs(root):
            raise ValueError(f"must hold absolute folder paths, got {rules.quote(root)}")
        if not os.path.isdir(root):
            raise ValueError(f"names a folder that does not exist: {rules.quote(root)}")
        if os.path.realpath(root) == "/":
            raise ValueError("must not hold / (it would admit every file on the machine)")
        roots.append(os.path.normpath(root))
    return tuple(roots)


def _redis_url(value: Any) -> str:
    """redis-py's own URL rules (the ones `Redis.from_url` applies), plus a database number
    that redis-py would silently ignore when it is not one."""
    from redis.connection import parse_url

    if not isinstance(value, str):
        raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {rules.quote(value)}")
    try:
        parse_url(value)
    except ValueError as exc:
        raise ValueError(
            f"must be a redis://, rediss:// or unix:// URL, got {rules.quote(value)} "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None
    if not value.startswith("unix://"):
        path = value.split("://", 1)[1].split("?", 1)[0].partition("/")[1:]
        if not _REDIS_DB.fullmatch("".join(path)):
            raise ValueError(f"must end in a database number, got {rules.quote(value)}")
    return value


_REDIS_MASTER = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_REDIS_USERNAME = re.compile(r"[!-~]{0,128}")  # printable ASCII, no space: an ACL user name


def _sentinels(value: Any) -> tuple[str, ...]:
    """`host:port` entries, each as typed; empty means no Sentinel (REDIS_URL names the
    server). An IPv6 address is written in brackets, `[::1]:26379`."""
    entries = tuple(value)
    for entry in entries:
        host, colon, port = entry.rpartition(":") if isinstance(entry, str) else ("", "", "")
        if (
            not colon
            or not _HOST.fullmatch(host)
            or not port.isascii()
            or not port.isdigit()
            or not 1 <= int(port) <= 65_535
        ):
            raise ValueError(f"must hold host:port entries, got {rules.quote(entry)}")
    if len(set(entries)) != len(entries):
        raise ValueError(f"names a Sentinel twice: {rules.quote(','.join(entries))}")
    return entries


def _redis_master(value: Any) -> str:
    if not isinstance(value, str) or not _REDIS_MASTER.fullmatch(value):
        raise ValueError(
            f"must be a Sentinel master name of letters, digits and - _ . only, "
            f"got {rules.quote(value)}"
        )
    return value


def _redis_username(value: Any) -> str:
    if not isinstance(value, str) or not _REDIS_USERNAME.fullmatch(value):
        raise ValueError("must be an ACL user name (printable ASCII, no spaces) or empty")
    return value


def _secret(value: Any) -> str:
    # The value itself is never quoted back: it is a password.
    if not isinstance(value, str) or len(value) > 512 or not value.isprintable():
        raise ValueError("must be printable text of at most 512 characters (value not shown)")
    return value


def _pem_file(value: Any) -> str:
    if not isinstance(value, str) or (value and not os.path.isabs(value)):
        raise ValueError(
            f"must be an absolute path to a PEM file, or empty, got {rules.quote(value)}"
        )
    if value and not os.path.isfile(value):
        raise ValueError(f"names a file that does not exist: {rules.quote(value)}")
    return value


def _host(value: Any) -> str:
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise ValueError(f"must be an address or a host name, got {rules.quote(value)}")
    return value


def _model_dir(value: Any) -> str:
    if not isinstance(value, str) or "\0" in value or not rules.text_ok(value):
        raise ValueError(f"must be a folder path or empty, got {rules.quote(value)}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {rules.quote(value)}")
    return value


ONE_GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Settings:
    # Input limits: checked before any pixel is decoded, so hostile files cost nothing.
    max_bytes: int = field(
        default=50 * 1024 * 1024,
        metadata=_env(
            "QRW_MAX_BYTES",
            "Largest accepted input file, in bytes.",
            # The file is held in memory whole; past half the 1 GiB budget it cannot be decoded.
            _number(1, ONE_GIB // 2, "bytes"),
        ),
    )
    max_pixels: int = field(
        default=60_000_000,
        metadata=_env(
            "QRW_MAX_PIXELS",
            "Largest accepted page, in pixels (width x height), checked from the header "
            "before decoding: a 48 MP phone photo fits, a decompression bomb does not. A page "
            "may cost up to 5.5 bytes per pixel of this while it is decoded.",
            # 75 MP x 5.5 bytes is about 410 MiB: two scans at once (the shim's default)
            # still fit the 1 GiB a process is given in ops/k8s.
            _number(1, 75_000_000),
        ),
    )
    max_pages: int = field(
        default=20,
        metadata=_env(
            "QRW_MAX_PAGES",
            "Most pages read from one document: TIFF and PDF pages, and every frame of an "
            "animated GIF, PNG or WebP.",
            _number(1, 1000),
        ),
    )
    max_document_pixels: int = field(
        default=150_000_000,
        metadata=_env(
            "QRW_MAX_DOCUMENT_PIXELS",
            "Most pixels decoded from one document, all its pages and frames together: the "
            "memory and time of a scan are bounded per document, not per page.",
            _number(1, 2_000_000_000),
        ),
    )
    max_jpeg_scans: int = field(
        default=100,
        metadata=_env(
            "QRW_MAX_JPEG_SCANS",
            "Most scans (SOS segments) a JPEG may hold, counted before decoding: libjpeg "
            "decodes every scan over the whole page in one call that no deadline stops. "
            "Encoders write 1 to 3 (baseline) or about 10 (progressive).",
            # libjpeg-turbo's fuzz targets cap scans at 500 (TJPARAM_SCANLIMIT) on pages of
            # at most 1 MP; a scan costs about 0.6 ms per megapixel here, so 100 scans of a
            # 60 MP page take about 4 s per decode. 10 keeps libjpeg's own colour script.
            _number(10, 1000),
        ),
    )
    max_jpeg_scan_pixels: int = field(
        default=1_000_000_000,
        metadata=_env(
            "QRW_MAX_JPEG_SCAN_PIXELS",
            "Most pixels a multi-scan (progressive) JPEG's scans may cover, all scans together "
            "(each scan counts the pixels of every component it holds), counted before "
            "decoding: such a decode costs about 1 ns per pixel counted, in one call that no "
            "deadline stops. A 60 MP colour progressive JPEG covers 480 M (4:2:0) to 840 M "
            "(4:4:4), a gray one 360 M.",
            # Measured here (libjpeg-turbo 3.1 in OpenCV 5.1), 60 MP pages: 0.6 to 1.0 ns per
            # pixel counted (machine idle to loaded), reduced (DCT-scaled) decodes alike; the
            # default keeps one decode of any accepted page under about a second, libjpeg's own
            # scripts pass at 60 MP. 100 M still takes a 7 MP 4:4:4 page.
            _number(100_000_000, 100_000_000_000),
        ),
    )
    max_job_bytes: int = field(
        default=1_048_576,
        metadata=_env(
            "QRW_MAX_JOB_BYTES",
            "Largest job `data` accepted from the queue, in bytes, both as stored and after "
            "zlib inflation; a larger job fails with invalid_payload before it is parsed.",
            _number(1024, 64 * 1024 * 1024, "bytes"),
        ),
    )
    pdf_dpi: int = field(
        default=200,
        metadata=_env(
            "QRW_PDF_DPI",
            "Resolution PDF pages are rasterised at for the thorough pass.",
            _number(36, 1200),
        ),
    )
    pdf_child: bool = field(
        default=True,
        metadata=_env(
            "QRW_PDF_CHILD",
            "Open and render PDFs in a child process with an address-space limit, killed at "
            "the deadline and reused between documents (docs/reliability.md has its measured "
            "cost); false runs PDFium in the scanning process, with no such guard.",
            Range("true, false (or 1/0, yes/no, on/off)", _bool),
        ),
    )
    pdf_child_memory_mb: int = field(
        default=384,
        metadata=_env(
            "QRW_PDF_CHILD_MEMORY_MB",
            "Address space of the PDF renderer child, in MiB: a document needing more fails "
            "with image_too_large. The shim's two scans at once may hold two such children.",
            # 128 MiB still holds the child's interpreter and PDFium (about 30 MiB) and the
            # largest page's gray bitmap (57 MiB at QRW_MAX_PIXELS); past 1 GiB the child
            # alone could take a whole process's budget.
            _number(128, 1024, "MiB"),
        ),
    )
    fast_max_side: int = field(
        default=1280,
        metadata=_env(
            "QRW_FAST_MAX_SIDE",
            "The fast pass works on the page reduced until its longer side is at most this many "
            "pixels (JPEGs are decoded directly at that size).",
            _number(256, 16_384, "px"),
        ),
    )
    thorough_max_side: int = field(
        default=4096,
        metadata=_env(
            "QRW_THOROUGH_MAX_SIDE",
            "The thorough pass reduces larger pages to this longer side; tiles cover the detail.",
            # The stages use about 9 bytes per pixel of the thorough image: 5800 px a side
            # is about 300 MiB, the most that keeps two scans inside 1 GiB.
            _number(256, 5_800, "px"),
        ),
    )
    deadline_ms: int = field(
        default=10_000,
        metadata=_env(
            "QRW_DEADLINE_MS",
            "Default time budget of one scan; a request may ask for less. 0 means no deadline.",
            _number(0, rules.MAX_DEADLINE_MS, "ms"),
        ),
    )
    want: str = field(
        default="all",
        metadata=_env(
            "QRW_WANT",
            "Default request: 'all' codes on the page, or the 'first' one.",
            _one_of(*(w.value for w in rules.Want)),
        ),
    )
    backend: str = field(
        default="onnx",
        metadata=_env(
            "QRW_BACKEND",
            "Runtime of the QR detector: 'onnx' (ONNX Runtime), 'torch' (PyTorch, installed "
            "with the [torch] extra) or 'none' (the classical cascade only). Same weights.",
            _one_of("onnx", "torch", "none"),
        ),
    )
    detector_models: tuple[str, ...] = field(
        default=("small", "medium"),
        metadata=_env(
            "QRW_DETECTOR_MODELS",
            "Detector sizes the cascade runs, comma-separated, in order: 'medium' runs only "
            "on pages 'small' left unread.",
            Range("small, medium, or both", _detector_models),
        ),
    )
    model_dir: str = field(
        default="",
        metadata=_env(
            "QRW_MODEL_DIR",
            "Folder holding qr-det-<size>.onnx / .pt. Empty: the weights shipped in `models/`.",
            Range("a folder, or empty", _model_dir),
        ),
    )
    model_threads: int = field(
        default=1,
        metadata=_env(
            "QRW_MODEL_THREADS",
            "Intra-op threads of the detector session. One per worker process gives the most "
            "images per second per core; more lowers one image's latency (the HTTP shim).",
            _number(1, 256),
        ),
    )
    image_threads: int = field(
        default=1,
        metadata=_env(
            "QRW_IMAGE_THREADS",
            "Threads of OpenCV's image operations in a process. One per worker process: a "
            "pool's waiting threads spin against the processes beside it.",
            _number(1, 256),
        ),
    )
    detector_threshold: float = field(
        default=0.3,
        metadata=_env(
            "QRW_DETECTOR_THRESHOLD",
            "Least detector confidence for a region to be rectified and decoded.",
            _number(0.01, 0.99),
        ),
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        repr=False,  # it may hold a password: runtime.describe() is what people are shown
        metadata=_env(
            "REDIS_URL",
            "The Redis that carries the queue and the results.",
            Range("redis://, rediss:// or unix:// URL (redis-py's rules)", _redis_url),
        ),
    )
    redis_username: str = field(
        default="",
        metadata=_env(
            "QRW_REDIS_USERNAME",
            "ACL user every Redis connection authenticates as; overrides REDIS_URL's user. "
            "Empty: REDIS_URL's, else `default`.",
            Range("an ACL user name, or empty", _redis_username),
        ),
    )
    redis_password: str = field(
        default="",
        repr=False,
        metadata=_env(
            "QRW_REDIS_PASSWORD",
            "Password of that user; overrides REDIS_URL's (keeps it out of the URL, which "
            "tools print). Never logged, shown or put in an error message.",
            Range("text, at most 512 characters", _secret),
        ),
    )
    redis_sentinels: tuple[str, ...] = field(
        default=(),
        metadata=_env(
            "QRW_REDIS_SENTINELS",
            "Sentinels to ask for the master, comma-separated host:port. Set: every process "
            "connects to the master they name (QRW_REDIS_MASTER), on start and after each "
            "failover, and REDIS_URL gives only the scheme, database, user and password "
            "(its host and port are not used). Empty: REDIS_URL's server.",
            Range("host:port entries, or empty", _sentinels),
        ),
    )
    redis_master: str = field(
        default="mymaster",
        metadata=_env(
            "QRW_REDIS_MASTER",
            "The master's name in the Sentinels' configuration (`sentinel monitor NAME ...`).",
            Range("1-100 of A-Z a-z 0-9 - _ .", _redis_master),
        ),
    )
    redis_sentinel_username: str = field(
        default="",
        metadata=_env(
            "QRW_REDIS_SENTINEL_USERNAME",
            "ACL user for the Sentinels themselves (their own `user` lines), when they "
            "require one.",
            Range("an ACL user name, or empty", _redis_username),
        ),
    )
    redis_sentinel_password: str = field(
        default="",
        repr=False,
        metadata=_env(
            "QRW_REDIS_SENTINEL_PASSWORD",
            "Password the Sentinels require (their `requirepass`), not the master's. Never "
            "logged or shown.",
            Range("text, at most 512 characters", _secret),
        ),
    )
    redis_ca: str = field(
        default="",
        metadata=_env(
            "QRW_REDIS_CA",
            "CA certificate (PEM) that a rediss:// server's certificate, and the "
            "Sentinels' under rediss://, must chain to. Empty: the system's CAs.",
            Range("an absolute path to an existing file, or empty", _pem_file),
        ),
    )
    redis_cert: str = field(
        default="",
        metadata=_env(
            "QRW_REDIS_CERT",
            "Client certificate (PEM) for rediss:// servers that require one "
            "(`tls-auth-clients yes`); may hold the key too.",
            Range("an absolute path to an existing file, or empty", _pem_file),
        ),
    )
    redis_key: str = field(
        default="",
        metadata=_env(
            "QRW_REDIS_KEY",
            "Private key (PEM) of QRW_REDIS_CERT, when it is in a file of its own.",
            Range("an absolute path to an existing file, or empty", _pem_file),
        ),
    )
    redis_wait_replicas: int = field(
        default=0,
        metadata=_env(
            "QRW_REDIS_WAIT_REPLICAS",
            "Replicas that must hold a write before it counts as done (Redis WAIT): a "
            "`qrw enqueue` job and a worker's result. 1 in a replicated (Sentinel) "
            "deployment, so a failover loses neither; 0 waits for none.",
            _number(0, 16),
        ),
    )
    redis_wait_ms: int = field(
        default=2000,
        metadata=_env(
            "QRW_REDIS_WAIT_MS",
            "Longest wait for those replicas, per write; a write not held by them in time "
            "is written again (docs/protocol.md, Replication).",
            _number(1, 60_000, "ms"),
        ),
    )
    queues: tuple[str, ...] = field(
        default=("qr", "qr-backfill"),
        metadata=_env(
            "QRW_QUEUES",
            "Queues a worker takes jobs from, comma-separated, in order: each job is the next "
            "one of the first queue that has any, so live jobs (`qr`) go ahead of queued "
            "backfill jobs (`qr-backfill`). The first is also where `qrw enqueue` puts jobs.",
            Range("1+ names of A-Z a-z 0-9 - _ .", _queues),
        ),
    )
    s3_buckets: tuple[str, ...] = field(
        default=(),
        metadata=_env(
            "QRW_S3_BUCKETS",
            "Buckets images may be read from, comma-separated; `bucket/folder` limits a bucket "
            "to keys under that folder (whole path segments: `in` never admits `in-evil/`). "
            "Empty: no s3:// reference is accepted.",
            Range("S3 bucket names, each with an optional /folder/; no *", _s3_buckets),
        ),
    )
    file_roots: tuple[str, ...] = field(
        default=(),
        metadata=_env(
            "QRW_FILE_ROOTS",
            "Folders file:// references may point into, colon-separated. Empty: none.",
            Range("existing absolute folders, not /", _file_roots),
        ),
    )
    result_ttl: int = field(
        default=86_400,
        metadata=_env(
            "QRW_RESULT_TTL",
            "Seconds a result (and its reply list) stays in Redis; a job's payload may give "
            "its result another (`result_ttl`, docs/protocol.md).",
            _number(1, rules.MAX_RESULT_TTL_S, "s"),
        ),
    )
    results_stream_maxlen: int = field(
        default=100_000,
        metadata=_env(
            "QRW_RESULTS_STREAM_MAXLEN",
            "Approximate cap of the qrw:results stream.",
            _number(100, 100_000_000),
        ),
    )
    workers: int = field(
        default=1,
        metadata=_env(
            "QRW_WORKERS", "Worker processes `qrw worker` runs (one engine each).", _number(1, 256)
        ),
    )
    worker_class: str = field(
        default="simple",
        metadata=_env(
            "QRW_WORKER_CLASS",
            "'simple' (jobs run in the worker process; fastest) or 'fork' (a work-horse "
            "process per job, about 15 ms more each). Both keep a hard time limit. "
            "See docs/benchmarks.md.",
            _one_of("simple", "fork"),
        ),
    )
    job_timeout: int = field(
        default=120,
        metadata=_env(
            "QRW_JOB_TIMEOUT",
            "Hard limit in seconds for one job when the producer sets none: past it the "
            "work-horse process is killed, even inside native code.",
            # The range a job's own `timeout` field has (worker/rules.py): an hour is far
            # beyond any batch of 100 images, and far inside what signal timers can hold.
            _number(rules.MIN_JOB_TIMEOUT_S, rules.MAX_JOB_TIMEOUT_S, "s"),
        ),
    )
    max_attempts: int = field(
        default=3,
        metadata=_env(
            "QRW_MAX_ATTEMPTS",
            "Runs of a job before it fails for good when its worker dies or it crashes.",
            _number(1, 20),
        ),
    )
    fetch_attempts: int = field(
        default=4,
        metadata=_env(
            "QRW_FETCH_ATTEMPTS",
            "Tries to fetch one image on transient storage errors (5xx, timeouts, resets), "
            "with exponential backoff.",
            _number(1, 10),
        ),
    )
    recovery_interval: int = field(
        default=10,
        metadata=_env(
            "QRW_RECOVERY_INTERVAL",
            "Seconds between scans for jobs whose worker died; such a job runs again within "
            "about three times this.",
            _number(1, 3600, "s"),
        ),
    )
    http_host: str = field(
        default="127.0.0.1",
        metadata=_env(
            "QRW_HTTP_HOST",
            "Address `qrw serve` listens on.",
            Range("an address or host name", _host),
        ),
    )
    http_port: int = field(
        default=8008,
        metadata=_env("QRW_HTTP_PORT", "Port `qrw serve` listens on.", _number(1, 65_535)),
    )
    http_processes: int = field(
        default=1,
        metadata=_env(
            "QRW_HTTP_PROCESSES",
            "Processes `qrw serve` runs (each loads the engine once).",
            _number(1, 256),
        ),
    )
    http_concurrency: int = field(
        default=2,
        metadata=_env(
            "QRW_HTTP_CONCURRENCY",
            "Scans one shim process runs at once; a request beyond it waits up to "
            "QRW_HTTP_SLOT_WAIT_MS for a slot, then gets 503 with Retry-After, never an "
            "unbounded queue. Each scan may take ~400 MiB at the default limits.",
            _number(1, 256),
        ),
    )
    http_body_timeout: float = field(
        default=30.0,
        metadata=_env(
            "QRW_HTTP_BODY_TIMEOUT",
            "Seconds a client has to send a whole request body; a slower upload gets 408.",
            _number(0.1, 3600.0, "s"),
        ),
    )
    http_min_body_rate: int = field(
        default=16_384,
        metadata=_env(
            "QRW_HTTP_MIN_BODY_RATE",
            "Least upload rate, bytes per second, on average after the first second and over "
            "each QRW_HTTP_BODY_RATE_WINDOW of the body; a client trickling or stalling "
            "slower is cut off with 408. 0 turns the rate checks off.",
            _number(0, ONE_GIB, "bytes/s"),
        ),
    )
    http_body_rate_window: float = field(
        default=5.0,
        metadata=_env(
            "QRW_HTTP_BODY_RATE_WINDOW",
            "Seconds over which QRW_HTTP_MIN_BODY_RATE is also measured: an upload that "
            "stalls, however fast it began, is cut about this long after it stalls (at most "
            "1 1/8 windows) and frees its upload budget.",
            _number(0.1, 600.0, "s"),
        ),
    )
    http_slot_wait_ms: int = field(
        default=250,
        metadata=_env(
            "QRW_HTTP_SLOT_WAIT_MS",
            "How long a request whose body is in waits for a free scan slot before 503; a "
            "short bounded wait keeps goodput near capacity under a burst.",
            _number(0, 60_000, "ms"),
        ),
    )
    ready_needs_redis: bool = field(
        default=False,
        metadata=_env(
            "QRW_READY_NEEDS_REDIS",
            "When true, the shim's /readyz also requires REDIS_URL to answer PING.",
            Range("true, false (or 1/0, yes/no, on/off)", _bool),
        ),
    )
    metrics_port: int = field(
        default=9108,
        metadata=_env(
            "QRW_METRICS_PORT",
            "Port of `qrw worker`'s Prometheus endpoint (all its processes and the queue "
            "gauges on one port); a port another process holds stops the pool at start. 0 "
            "turns it off.",
            _number(0, 65_535),
        ),
    )
    backfill_nice: int = field(
        default=10,
        metadata=_env(
            "QRW_BACKFILL_NICE",
            "CPU niceness `qrw backfill` takes while it drives a run: on a machine it shares "
            "with workers, 10 makes it use the cores they leave idle; 0 when it has its own.",
            _number(0, 19),
        ),
    )
    backfill_redis_patience: int = field(
        default=300,
        metadata=_env(
            "QRW_BACKFILL_REDIS_PATIENCE",
            "Seconds `qrw backfill` rides out a Redis that is unreachable or full before it "
            "stops, marks the run failed and exits 1 (resume continues it).",
            _number(1, 86_400, "s"),
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_env(
            "QRW_LOG_LEVEL",
            "Least level logged (any case).",
            _one_of("debug", "info", "warning", "error", "critical", fold_case=True),
        ),
    )
    log_format: str = field(
        default="json",
        metadata=_env(
            "QRW_LOG_FORMAT",
            "'json' (one object per line) or 'console'.",
            _one_of("json", "console"),
        ),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                checked = f.metadata["range"].check(value)
            except ValueError as exc:
                raise SettingsError(f"{f.metadata['env']} {exc}") from None
            if checked is not value:
                # Frozen: normalising (a bucket folder's '/', a level's case) bypasses it once.
                object.__setattr__(self, f.name, checked)
        self._check_redis()

    def _check_redis(self) -> None:
        """What the Redis settings mean together: one line naming the variables."""
        tls = self.redis_url.startswith("rediss://")
        if self.redis_sentinels and self.redis_url.startswith("unix://"):
            raise SettingsError(
                "QRW_REDIS_SENTINELS needs a redis:// or rediss:// REDIS_URL: Sentinels name "
                "the master by address, not by socket"
            )
        for name, value in (
            ("QRW_REDIS_CA", self.redis_ca),
            ("QRW_REDIS_CERT", self.redis_cert),
            ("QRW_REDIS_KEY", self.redis_key),
        ):
            if value and not tls:
                raise SettingsError(f"{name} is set, but REDIS_URL is not rediss:// (TLS)")
        if self.redis_key and not self.redis_cert:
            raise SettingsError("QRW_REDIS_KEY is set without QRW_REDIS_CERT")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `environ` (the process environment by default).

        Keyword overrides win over the environment; tests and embedders use them.
        Raises SettingsError, one line naming the variable, for any value out of range.
        """
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw.strip(), hints[f.name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def backend_name(self) -> str:
        """The detector runtime as results name it: "onnx", "torch", or "classical"."""
        return "classical" if self.backend == "none" else self.backend

    @property
    def model_names(self) -> str | None:
        """The detector models in the cascade, e.g. "qr-det-small,qr-det-medium"."""
        if self.backend == "none" or not self.detector_models:
            return None
        return ",".join(f"qr-det-{size}" for size in self.detector_models)


# ASCII only: int() and float() also take Arabic-Indic or full-width digits, and a setting
# that reads differently to a person and to the service is a trap.
_INT_TEXT = re.compile(r"[+-]?[0-9][0-9_]{0,30}")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15})([eE][+-]?[0-9]{1,3})?")


def _parse(f: dataclasses.Field[Any], raw: str, hint: Any) -> Any:
    var = f.metadata["env"]
    rule: Range = f.metadata["range"]
    if getattr(hint, "__origin__", None) is tuple:
        separator = ":" if var == "QRW_FILE_ROOTS" else ","
        return tuple(part.strip() for part in raw.split(separator) if part.strip())
    target = hint if isinstance(hint, type) else str
    if target is bool:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    elif target is int and _INT_TEXT.fullmatch(raw):
        return int(raw.replace("_", ""))
    elif target is float and _FLOAT_TEXT.fullmatch(raw):
        value = float(raw)
        if math.isfinite(value):
            return value
    elif target is str:
        return raw
    raise SettingsError(f"{var} must be {rule.text}, got {rules.quote(raw)}")


def parse_one(name: str, raw: str) -> Any:
    """One setting's value from text, checked against its range: for command-line options
    that override a setting (`qrw worker --workers 4`). Raises SettingsError."""
    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    value = _parse(f, raw.strip(), get_type_hints(Settings)[name])
    try:
        return f.metadata["range"].check(value)
    except ValueError as exc:
        raise SettingsError(f"{f.metadata['env']} {exc}") from None


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting."""
    return [(variable, default, doc) for variable, default, _range, doc in _rows()]


def _rows() -> list[tuple[str, str, str, str]]:
    def shown(value: object) -> str:
        return ",".join(value) if isinstance(value, tuple) else str(value)

    return [
        (f.metadata["env"], shown(f.default), f.metadata["range"].text, f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]


def markdown_table() -> str:
    """The README's configuration table: variable, default, range and meaning of each setting."""
    lines = ["| variable | default | range | meaning |", "|---|---|---|---|"]
    for variable, default, text, doc in _rows():
        lines.append(f"| `{variable}` | `{default}` | {text} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
