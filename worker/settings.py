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
    log_level: str = field(default="info", metadata=_env("QRW_LOG_LEVEL", "Log level."))
    log_format: str = field(
        default="json",
        metadata=_env("QRW_LOG_FORMAT", "'json' (one object per line) or 'console'."),
    )

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_pages", "pdf_dpi", "fast_max_side"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_var(name)} must be positive, got {getattr(self, name)}")
        if self.deadline_ms < 0:
            raise SettingsError(f"QRW_DEADLINE_MS must be 0 or more, got {self.deadline_ms}")
        if self.want not in ("all", "first"):
            raise SettingsError(f"QRW_WANT must be 'all' or 'first', got {self.want!r}")
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


def _var(name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == name)


def _parse(var: str, raw: str, hint: Any) -> Any:
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
    return [
        (f.metadata["env"], str(f.default), f.metadata["doc"]) for f in dataclasses.fields(Settings)
    ]
