"""One settings object for the whole service, read from the environment.

Every knob lives here so that the engine, the queue worker, the HTTP shim and the
command line agree on one meaning per variable. Each field names its variable in
its metadata, and a test keeps the README's configuration table in step with it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _env(name: str, doc: str) -> dict[str, str]:
    return {"env": name, "doc": doc}


@dataclass(frozen=True, slots=True)
class Settings:
    # Input limits: checked before any pixel is decoded, so hostile files cost nothing.
    max_bytes: int = field(
        default=50 * 1024 * 1024,
        metadata=_env("QRW_MAX_BYTES", "Largest accepted input file, in bytes."),
    )
    max_pixels: int = field(
        default=60_000_000,
        metadata=_env(
            "QRW_MAX_PIXELS",
            "Largest accepted page, in pixels (width x height), checked from the header "
            "before decoding: a 48 MP phone photo fits, a decompression bomb does not.",
        ),
    )
    max_pages: int = field(
        default=20,
        metadata=_env("QRW_MAX_PAGES", "Most pages read from one TIFF, GIF or PDF."),
    )
    max_document_pixels: int = field(
        default=150_000_000,
        metadata=_env(
            "QRW_MAX_DOCUMENT_PIXELS",
            "Most pixels decoded from one document, all its pages and frames together: the "
            "memory and time of a scan are bounded per document, not per page.",
        ),
    )
    max_job_bytes: int = field(
        default=1_048_576,
        metadata=_env(
            "QRW_MAX_JOB_BYTES",
            "Largest job `data` accepted from the queue, in bytes, both as stored and after "
            "zlib inflation; a larger job fails with invalid_payload before it is parsed.",
        ),
    )
    pdf_dpi: int = field(
        default=200,
        metadata=_env(
            "QRW_PDF_DPI", "Resolution PDF pages are rasterised at for the thorough pass."
        ),
    )
    fast_max_side: int = field(
        default=1280,
        metadata=_env(
            "QRW_FAST_MAX_SIDE",
            "The fast pass works on the page reduced until its longer side is at most this many "
            "pixels (JPEGs are decoded directly at that size).",
        ),
    )
    thorough_max_side: int = field(
        default=4096,
        metadata=_env(
            "QRW_THOROUGH_MAX_SIDE",
            "The thorough pass reduces larger pages to this longer side; tiles cover the detail.",
        ),
    )
    deadline_ms: int = field(
        default=10_000,
        metadata=_env(
            "QRW_DEADLINE_MS",
            "Default time budget of one scan; a request may ask for less. 0 means no deadline.",
        ),
    )
    want: str = field(
        default="all",
        metadata=_env("QRW_WANT", "Default request: 'all' codes on the page, or the 'first' one."),
    )
    backend: str = field(
        default="onnx",
        metadata=_env(
            "QRW_BACKEND",
            "Runtime of the QR detector: 'onnx' (ONNX Runtime), 'torch' (PyTorch, installed "
            "with the [torch] extra) or 'none' (the classical cascade only). Same weights.",
        ),
    )
    detector_models: tuple[str, ...] = field(
        default=("small", "medium"),
        metadata=_env(
            "QRW_DETECTOR_MODELS",
            "Detector sizes the cascade runs, comma-separated, in order: 'medium' runs only "
            "on pages 'small' left unread.",
        ),
    )
    model_dir: str = field(
        default="",
        metadata=_env(
            "QRW_MODEL_DIR",
            "Folder holding qr-det-<size>.onnx / .pt. Empty: the weights shipped in `models/`.",
        ),
    )
    model_threads: int = field(
        default=1,
        metadata=_env(
            "QRW_MODEL_THREADS",
            "Intra-op threads of the detector session. One per worker process gives the most "
            "images per second per core; more lowers one image's latency (the HTTP shim).",
        ),
    )
    detector_threshold: float = field(
        default=0.3,
        metadata=_env(
            "QRW_DETECTOR_THRESHOLD",
            "Least detector confidence for a region to be rectified and decoded.",
        ),
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=_env("REDIS_URL", "The Redis that carries the queue and the results."),
    )
    queues: tuple[str, ...] = field(
        default=("qr",),
        metadata=_env("QRW_QUEUES", "Queues a worker takes jobs from, comma-separated, in order."),
    )
    s3_buckets: tuple[str, ...] = field(
        default=(),
        metadata=_env(
            "QRW_S3_BUCKETS",
            "Buckets images may be read from, comma-separated; `bucket/prefix/` limits a bucket "
            "to keys under that folder. Empty: no s3:// reference is accepted.",
        ),
    )
    file_roots: tuple[str, ...] = field(
        default=(),
        metadata=_env(
            "QRW_FILE_ROOTS",
            "Folders file:// references may point into, colon-separated. Empty: none.",
        ),
    )
    result_ttl: int = field(
        default=86_400,
        metadata=_env("QRW_RESULT_TTL", "Seconds a result (and its reply list) stays in Redis."),
    )
    results_stream_maxlen: int = field(
        default=100_000,
        metadata=_env("QRW_RESULTS_STREAM_MAXLEN", "Approximate cap of the qrw:results stream."),
    )
    workers: int = field(
        default=1,
        metadata=_env("QRW_WORKERS", "Worker processes `qrw worker` runs (one engine each)."),
    )
    worker_class: str = field(
        default="simple",
        metadata=_env(
            "QRW_WORKER_CLASS",
            "'simple' (jobs run in the worker process; fastest) or 'fork' (a work-horse "
            "process per job, about 15 ms more each). Both keep a hard time limit. "
            "See docs/benchmarks.md.",
        ),
    )
    job_timeout: int = field(
        default=120,
        metadata=_env(
            "QRW_JOB_TIMEOUT",
            "Hard limit in seconds for one job when the producer sets none: past it the "
            "work-horse process is killed, even inside native code.",
        ),
    )
    max_attempts: int = field(
        default=3,
        metadata=_env(
            "QRW_MAX_ATTEMPTS",
            "Runs of a job before it fails for good when its worker dies or it crashes.",
        ),
    )
    fetch_attempts: int = field(
        default=4,
        metadata=_env(
            "QRW_FETCH_ATTEMPTS",
            "Tries to fetch one image on transient storage errors (5xx, timeouts, resets), "
            "with exponential backoff.",
        ),
    )
    recovery_interval: int = field(
        default=10,
        metadata=_env(
            "QRW_RECOVERY_INTERVAL",
            "Seconds between scans for jobs whose worker died; such a job runs again within "
            "about three times this.",
        ),
    )
    http_host: str = field(
        default="127.0.0.1",
        metadata=_env("QRW_HTTP_HOST", "Address `qrw serve` listens on."),
    )
    http_port: int = field(
        default=8008, metadata=_env("QRW_HTTP_PORT", "Port `qrw serve` listens on.")
    )
    http_processes: int = field(
        default=1,
        metadata=_env(
            "QRW_HTTP_PROCESSES", "Processes `qrw serve` runs (each loads the engine once)."
        ),
    )
    http_concurrency: int = field(
        default=2,
        metadata=_env(
            "QRW_HTTP_CONCURRENCY",
            "Scans one shim process runs at once; a request beyond it gets 503 with "
            "Retry-After instead of waiting in an unbounded queue.",
        ),
    )
    http_body_timeout: float = field(
        default=30.0,
        metadata=_env(
            "QRW_HTTP_BODY_TIMEOUT",
            "Seconds a client has to send a whole request body; a slower upload gets 408.",
        ),
    )
    http_min_body_rate: int = field(
        default=16_384,
        metadata=_env(
            "QRW_HTTP_MIN_BODY_RATE",
            "Least average upload rate, bytes per second, after the first second; a client "
            "trickling slower is cut off with 408.",
        ),
    )
    http_slot_wait_ms: int = field(
        default=250,
        metadata=_env(
            "QRW_HTTP_SLOT_WAIT_MS",
            "How long a request whose body is in waits for a free scan slot before 503; a "
            "short bounded wait keeps goodput near capacity under a burst.",
        ),
    )
    ready_needs_redis: bool = field(
        default=False,
        metadata=_env(
            "QRW_READY_NEEDS_REDIS",
            "When true, the shim's /readyz also requires REDIS_URL to answer PING.",
        ),
    )
    metrics_port: int = field(
        default=9108,
        metadata=_env(
            "QRW_METRICS_PORT",
            "Port of `qrw worker`'s Prometheus endpoint (all its processes and the queue "
            "gauges on one port); 0 turns it off.",
        ),
    )
    log_level: str = field(default="info", metadata=_env("QRW_LOG_LEVEL", "Log level."))
    log_format: str = field(
        default="json",
        metadata=_env("QRW_LOG_FORMAT", "'json' (one object per line) or 'console'."),
    )

    def __post_init__(self) -> None:
        for name in (
            "max_bytes",
            "max_pixels",
            "max_pages",
            "pdf_dpi",
            "fast_max_side",
            "result_ttl",
            "workers",
            "job_timeout",
            "max_attempts",
            "fetch_attempts",
            "recovery_interval",
            "model_threads",
            "http_port",
            "http_processes",
            "http_concurrency",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_var(name)} must be positive, got {getattr(self, name)}")
        if not 0 <= self.metrics_port < 65536:
            raise SettingsError(f"QRW_METRICS_PORT must be 0..65535, got {self.metrics_port}")
        if self.deadline_ms < 0:
            raise SettingsError(f"QRW_DEADLINE_MS must be 0 or more, got {self.deadline_ms}")
        if self.want not in ("all", "first"):
            raise SettingsError(f"QRW_WANT must be 'all' or 'first', got {self.want!r}")
        if self.worker_class not in ("fork", "simple"):
            raise SettingsError(
                f"QRW_WORKER_CLASS must be 'fork' or 'simple', got {self.worker_class!r}"
            )
        if self.backend not in ("onnx", "torch", "none"):
            raise SettingsError(
                f"QRW_BACKEND must be 'onnx', 'torch' or 'none', got {self.backend!r}"
            )
        unknown = [m for m in self.detector_models if m not in ("small", "medium")]
        if unknown:
            raise SettingsError(f"QRW_DETECTOR_MODELS: unknown sizes {unknown}")
        if not 0.0 < self.detector_threshold < 1.0:
            raise SettingsError(
                f"QRW_DETECTOR_THRESHOLD must be between 0 and 1, got {self.detector_threshold}"
            )
        if self.log_format not in ("json", "console"):
            raise SettingsError(
                f"QRW_LOG_FORMAT must be 'json' or 'console', got {self.log_format!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `environ` (the process environment by default).

        Keyword overrides win over the environment; tests and embedders use them.
        """
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f.metadata["env"], raw.strip(), hints[f.name])
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


def _var(name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == name)


def _parse(var: str, raw: str, hint: Any) -> Any:
    if getattr(hint, "__origin__", None) is tuple:
        separator = ":" if var == "QRW_FILE_ROOTS" else ","
        return tuple(part.strip() for part in raw.split(separator) if part.strip())
    target = hint if isinstance(hint, type) else str
    try:
        if target is bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw.replace("_", ""))
        if target is float:
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{var}={raw!r} is not a valid {target.__name__}") from exc
    return raw


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the README's configuration table."""

    def shown(value: object) -> str:
        return ",".join(value) if isinstance(value, tuple) else str(value)

    return [
        (f.metadata["env"], shown(f.default), f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]
