"""The shim's ASGI application (Starlette): POST /detect and the operational endpoints.

The engine is built and warmed in the lifespan, before uvicorn accepts a connection, so
a process that answers at all is ready. Scans run in worker threads (the engine holds
no per-scan state and releases the GIL in its native decoders), at most
QRW_HTTP_CONCURRENCY at once; beyond that a request is refused, never queued.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker import metrics
from worker.engine import Engine, ScanResult
from worker.engine.errors import ErrorCode, ScanFailed
from worker.http.body import read_image
from worker.http.limits import Busy, Slots
from worker.http.openapi import DOCUMENT
from worker.settings import Settings

log = structlog.get_logger("http")

STATUS = {
    ErrorCode.EMPTY_INPUT: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_FORMAT: 415,
    ErrorCode.CORRUPT_IMAGE: 422,
    ErrorCode.BUSY: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}
_MAX_DEADLINE_MS = 600_000
_PREPROCESS = ("read", "decode_image")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    slots = Slots(settings.http_concurrency)
    state: dict[str, Any] = {"engine": engine}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if state["engine"] is None:
            started = time.perf_counter()
            built = await anyio.to_thread.run_sync(Engine, settings)
            await anyio.to_thread.run_sync(built.warm_up)
            state["engine"] = built
            log.info("shim_ready", model=_model_name(settings), ms=_ms(started))
        metrics.set_model(settings.backend_name, settings.model_names)
        yield

    async def detect(request: Request) -> Response:
        started = time.perf_counter()
        try:
            want, deadline_ms = _parameters(request, settings)
            with slots.take():
                metrics.HTTP_IN_FLIGHT.inc()
                try:
                    data = await read_image(request, settings.max_bytes)
                    result: ScanResult = await anyio.to_thread.run_sync(
                        lambda: state["engine"].scan(data, deadline_ms=deadline_ms, want=want)
                    )
                finally:
                    metrics.HTTP_IN_FLIGHT.dec()
        except Busy as exc:
            return _error(ErrorCode.BUSY, str(exc), headers={"Retry-After": "1"})
        except ScanFailed as failure:
            return _error(failure.code, failure.message)
        metrics.observe_scan(result, "http")
        body = _shape(result, settings, started)
        status = STATUS.get(result.error.code, 500) if result.error else 200
        metrics.HTTP_REQUESTS.labels("/detect", str(status)).inc()
        log.info(
            "detect",
            status=status,
            codes=len(result.codes),
            error=result.error.code.value if result.error else None,
            ms=body["latency_ms"],
        )
        return JSONResponse(body, status_code=status)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"alive": True})

    async def readyz(_: Request) -> Response:
        checks: dict[str, Any] = {"engine": state["engine"] is not None}
        if settings.ready_needs_redis:
            checks["redis"] = await anyio.to_thread.run_sync(_redis_answers, settings.redis_url)
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "model": _model_name(settings), **checks},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(_: Request) -> Response:
        registry = metrics.multiprocess_registry() if metrics.multiprocess_enabled() else None
        return Response(
            metrics.exposition(registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi(_: Request) -> Response:
        return JSONResponse(DOCUMENT)

    return Starlette(
        routes=[
            Route("/detect", detect, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
    )


def _parameters(request: Request, settings: Settings) -> tuple[str, int | None]:
    want = request.query_params.get("want", settings.want)
    if want not in ("all", "first"):
        raise ScanFailed(ErrorCode.INVALID_REQUEST, f"want must be 'all' or 'first', not {want!r}")
    raw = request.query_params.get("deadline_ms")
    if raw is None:
        return want, None
    if not raw.isdigit() or int(raw) > _MAX_DEADLINE_MS:
        raise ScanFailed(
            ErrorCode.INVALID_REQUEST,
            f"deadline_ms must be an integer from 0 to {_MAX_DEADLINE_MS}, not {raw!r}",
        )
    return want, int(raw)


def _shape(result: ScanResult, settings: Settings, started: float) -> dict[str, Any]:
    """The original service's fields first (existing callers keep working), then ours."""
    timings = result.timings_ms
    preprocess = sum(timings.get(k, 0.0) for k in _PREPROCESS)
    inference = sum(v for k, v in timings.items() if k not in (*_PREPROCESS, "total"))
    latency = _ms(started)
    document = result.to_dict()
    return {
        "success": result.ok and bool(result.codes),
        "data": result.codes[0].text if result.codes else None,
        "model": _model_name(settings),
        "latency_ms": latency,
        "breakdown": {
            "preprocess_ms": round(preprocess, 3),
            "inference_ms": round(inference, 3),
            "postprocess_ms": round(max(0.0, latency - preprocess - inference), 3),
        },
        **document,
    }


def _error(code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> Response:
    status = STATUS.get(code, 500)
    metrics.HTTP_REQUESTS.labels("/detect", str(status)).inc()
    log.info("detect", status=status, error=code.value, message=message[:200])
    return JSONResponse(
        {"success": False, "error": {"code": code.value, "message": message}},
        status_code=status,
        headers=headers,
    )


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _model_name(settings: Settings) -> str:
    """The original service's `model` field: the detector models and their runtime."""
    models = settings.model_names
    return f"{models}/{settings.backend}" if models else "classical"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
