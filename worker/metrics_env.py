"""prometheus-client's multiprocess folder, set up without importing prometheus-client.

The client picks its storage when it is first imported, from PROMETHEUS_MULTIPROC_DIR:
a parent that will start several scanning processes must set the folder before that
import happens anywhere, which is why this lives apart from `worker.metrics`.
"""

from __future__ import annotations

import os
import tempfile

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def prepare_multiprocess() -> str:
    """The shared folder (created when the environment names none); call before the
    processes that record metrics start."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if not folder:
        folder = tempfile.mkdtemp(prefix="qrw-metrics-")
        os.environ[MULTIPROCESS_ENV] = folder
    return folder
