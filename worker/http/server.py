"""`qrw serve`: the shim under uvicorn, one or several processes on one port."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from worker.http.app import create_app
from worker.metrics_env import prepare_multiprocess
from worker.settings import Settings


def app_factory() -> Starlette:
    """Each uvicorn process builds its own app (and engine) from the environment."""
    return create_app(Settings.from_env())


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    if settings.http_processes > 1:
        # Several processes answer /metrics: each must see all their samples.
        prepare_multiprocess()
    uvicorn.run(
        "worker.http.server:app_factory",
        factory=True,
        host=host or settings.http_host,
        port=port or settings.http_port,
        workers=settings.http_processes,
        log_config=None,  # our structlog setup owns the log format
        access_log=False,  # one structured `detect` event per request instead
        timeout_graceful_shutdown=30,
    )
    return 0
