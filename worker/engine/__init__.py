"""The decode engine: `Engine(settings).scan(data)` returns a typed `ScanResult`.

>>> from worker.engine import Engine
>>> result = Engine().scan(open("invoice.jpg", "rb").read())
>>> [code.text for code in result.codes]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.engine.errors import ErrorCode, ScanFailed
from worker.engine.results import Code, ScanError, ScanResult

if TYPE_CHECKING:
    from worker.engine.cascade import Stage, StageContext, Want
    from worker.engine.engine import Engine, default_stages

# The decoding half (OpenCV, zxing-cpp, NumPy: a tenth of a second of imports) loads on
# first use, so a process that only handles results and errors (`qrw backfill`, the
# producer's checks) starts without it.
_LAZY = {
    "Engine": "worker.engine.engine",
    "default_stages": "worker.engine.engine",
    "Stage": "worker.engine.cascade",
    "StageContext": "worker.engine.cascade",
    "Want": "worker.engine.cascade",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'worker.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Code",
    "Engine",
    "ErrorCode",
    "ScanError",
    "ScanFailed",
    "ScanResult",
    "Stage",
    "StageContext",
    "Want",
    "default_stages",
]
