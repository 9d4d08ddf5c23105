"""Writing benchmark sections into docs/benchmarks.md without disturbing the others.

Each benchmark owns one section between `<!-- begin:NAME -->` and `<!-- end:NAME -->`
markers, so separate commands can each regenerate their own numbers.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np


def plots_missing() -> str | None:
    """Why the benchmark's plots cannot be drawn here, or None: matplotlib comes with the
    `bench` extra only, and a run should say so before its work, not fail after it."""
    if importlib.util.find_spec("matplotlib") is None:
        return (
            "matplotlib is not installed (pip install -e '.[bench]'), so the report is "
            "written without its plots"
        )
    return None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {version(name)}"
        for name in ("zxing-cpp", "opencv-python-headless", "numpy", "pillow", "pypdfium2")
    )
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; {versions}"
    )


def write_section(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# A section write_section put into a document.
_SECTION = re.compile(r"<!-- begin:([\w-]+) -->.*?<!-- end:\1 -->", re.DOTALL)


def write_document(path: Path, text: str) -> None:
    """Write a benchmark's whole document, keeping the sections other commands wrote into
    it with write_section (docs/reliability.md: the hostile report, and the soak's section
    after it), so each command can regenerate its own numbers alone."""
    kept = (
        [found.group(0) for found in _SECTION.finditer(path.read_text())] if path.exists() else []
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join([text.rstrip(), *kept]) + "\n")
