"""The decode engine: `Engine(settings).scan(data)` returns a typed `ScanResult`.

>>> from worker.engine import Engine
>>> result = Engine().scan(open("invoice.jpg", "rb").read())
>>> [code.text for code in result.codes]
"""

from worker.engine.cascade import Stage, StageContext, Want
from worker.engine.engine import Engine, default_stages
from worker.engine.errors import ErrorCode, ScanFailed
from worker.engine.results import Code, ScanError, ScanResult

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
