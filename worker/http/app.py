"""The shim's ASGI application (Starlette): POST /detect and the operational endpoints.

The engine is built and warmed in the lifespan, before uvicorn accepts a connection, so
a process that answers at all is ready. Scans run in worker threads (the engine holds
no per-scan state and releases the GIL in its native decoders), at most
QRW_HTTP_CONCURRENCY at once. A request takes a scan slot only once its whole body is in
(bounded in time and rate, `body.py`), and waits for one at most QRW_HTTP_SLOT_WAIT_MS
(`limits.py`). Every error is JSON in one shape (`{"success": false, "error": {"code",
"message"}}`): a scan's, a bug's, and the framework's own (no such route, a method the route
does not take). A middleware counts each answer to /detect under its status.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker import metrics, rules
from worker.engine import Engine, ScanResult
from worker.errors import ErrorCode, ScanFailed
from worker.http.body import ClientClosed, Pace, read_image
from worker.http.limits import Busy, Slots, Uploads
from worker.http.openapi import DOCUMENT
from worker.settings import Settings

log = structlog.get_logger("http")

STATUS = {
    ErrorCode.EMPTY_INPUT: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_FORMAT: 415,
    ErrorCode.CORRUPT_IMAGE: 422,
    ErrorCode.ENCRYPTED_DOCUMENT: 422,
    ErrorCode.BUSY: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}
DETECT = "/detect"
_PREPROCESS = ("read", "decode_image")
# nginx's name for "the client closed the connection before the answer": such requests are
# counted under it, though no response reaches anyone.
_CLIENT_CLOSED = 499
# Bodies held at once: one per scan slot, and room for two more arriving or waiting.
_BODIES_BEYOND_SLOTS = 2
# Statuses whose answers must carry no body (RFC 9110): a framework exception with one is
# answered bare.
_BODILESS = frozenset({204, 304})


@dataclass(frozen=True)
class ShimState:
    """What every request of one app shares, built by the lifespan before uvicorn accepts a
    connection, and reached from a request as `request.state.shim`."""

    settings: Settings
    engine: Engine
    slots: Slots
    uploads: Uploads
    pace: Pace
    # Threads for the scans the slots admit: anyio's shared default (40) would otherwise
    # queue scans past it while they hold their slots.
    scan_threads: anyio.CapacityLimiter
    # A shim that depends on Redis says whether it reaches it, in /readyz and as
    # qrw_redis_up on /metrics; one that does not use Redis says nothing about it.
    redis_up: metrics.RedisUpCollector | None


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Starlette:
    """The shim for `settings` (the environment's when None); `engine`, when given, is used
    as it is instead of one built and warmed at start."""
    settings = settings or Settings.from_env()
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(CountDetectAnswers)],
        exception_handlers={HTTPException: _framework_error, Exception: _unhandled_error},
        lifespan=partial(_lifespan, settings, engine),
    )


@asynccontextmanager
async def _lifespan(
    settings: Settings, engine: Engine | None, _: Starlette
) -> AsyncIterator[dict[str, ShimState]]:
    if engine is None:
        started = time.perf_counter()
        engine = await anyio.to_thread.run_sync(Engine, settings)
        await anyio.to_thread.run_sync(engine.warm_up)
        log.info("shim_ready", model=_model_name(settings), ms=_ms(started))
    metrics.start("http", settings.backend_name, settings.model_names)
    yield {
        "shim": ShimState(
            settings=settings,
            engine=engine,
            slots=Slots(settings.http_concurrency, settings.http_slot_wait_ms / 1000.0),
            uploads=Uploads(
                (settings.http_concurrency + _BODIES_BEYOND_SLOTS) * settings.max_bytes
            ),
            pace=Pace(
                settings.http_body_timeout,
                settings.http_min_body_rate,
                settings.http_body_rate_window,
            ),
            scan_threads=anyio.CapacityLimiter(settings.http_concurrency),
            redis_up=(metrics.RedisUpCollector(settings) if settings.ready_needs_redis else None),
        )
    }


def _shim(request: Request) -> ShimState:
    shim: ShimState = request.state.shim
    return shim


class CountDetectAnswers:
    """Counts every answer to /detect by its status, once, whatever gave it: a scan, a
    refusal, a client that left (499), the framework (405 for a GET) or a bug. Other routes
    are not counted: probes and scrapes would dilute the shares the alerts watch."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DETECT:
            await self.app(scope, receive, send)
            return
        counted = False

        async def counting_send(message: Message) -> None:
            nonlocal counted
            # Counted before the first byte goes out, so a caller that reads /metrics right
            # after its answer finds the answer in it.
            if message["type"] == "http.response.start" and not counted:
                counted = True
                metrics.HTTP_REQUESTS.labels(DETECT, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not counted:  # the server-error layer outside answers it 500
                metrics.HTTP_REQUESTS.labels(DETECT, "500").inc()
            raise


async def detect(request: Request) -> Response:
    shim = _shim(request)
    started = time.perf_counter()
    holding = shim.uploads.hold()
    body_in = False
    try:
        want, deadline_ms = _parameters(request, shim.settings)
        data = await read_image(request, shim.settings.max_bytes, shim.pace, holding)
        body_in = True
        async with shim.slots.take():
            metrics.HTTP_IN_FLIGHT.inc()
            try:
                result, document = await anyio.to_thread.run_sync(
                    partial(_scan, shim.engine, data, deadline_ms, want),
                    limiter=shim.scan_threads,
                )
            finally:
                metrics.HTTP_IN_FLIGHT.dec()
        return _answer(result, document, shim.settings, started)
    except Busy as exc:
        return _error(ErrorCode.BUSY, str(exc), close=not body_in, retry_after=True)
    except ScanFailed as failure:
        return _error(failure.code, failure.message, close=not body_in)
    except ClientDisconnect as exc:
        return _client_closed(exc, started)
    except Exception as exc:  # a bug: still one JSON answer, and one event with its trace
        return _internal_error(exc, close=not body_in)
    finally:
        holding.release()


async def healthz(_: Request) -> Response:
    return JSONResponse({"alive": True})


async def readyz(request: Request) -> Response:
    """Ready: the engine loaded, Redis answering when required, and scans not queueing.

    A saturated shim (every slot taken and requests waiting) says 503 with the reason,
    so a load balancer routes elsewhere; /healthz stays a pure liveness check. The
    upload budget is shown but never makes the shim unready: clients that merely hold
    bodies open could otherwise take every replica out of its Service at once, while
    each replica is healthy and refuses only the uploads that do not fit (503 with
    Retry-After) until the stalled ones are cut (QRW_HTTP_BODY_RATE_WINDOW).
    """
    shim = _shim(request)
    # The lifespan builds the engine before the first connection: a shim that answers has it.
    checks: dict[str, bool] = {"engine": True}
    if shim.redis_up is not None:
        checks["redis"] = await anyio.to_thread.run_sync(shim.redis_up.answers)
    reasons = [_NOT_READY[name] for name, ok in checks.items() if not ok]
    slots = shim.slots
    if slots.saturated:
        reasons.append(
            f"saturated: all {slots.limit} scan slots are taken and {slots.waiting} "
            "requests wait for one"
        )
    document: dict[str, Any] = {
        "ready": not reasons,
        "model": _model_name(shim.settings),
        **checks,
        "slots": slots.describe(),
        "uploads": shim.uploads.describe(),
    }
    if reasons:
        document["reason"] = "; ".join(reasons)
    return JSONResponse(document, status_code=503 if reasons else 200)


async def metrics_endpoint(request: Request) -> Response:
    redis_up = _shim(request).redis_up
    registry = metrics.multiprocess_registry() if metrics.multiprocess_enabled() else None
    extra = [redis_up] if redis_up is not None else []
    # In a thread: the PING may take up to its timeout, while the loop serves /detect.
    text = await anyio.to_thread.run_sync(metrics.exposition, registry, extra)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(_: Request) -> Response:
    return JSONResponse(DOCUMENT)


ROUTES = [
    Route(DETECT, detect, methods=["POST"]),
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics_endpoint),
    Route("/openapi.json", openapi),
]


_NOT_READY = {
    "redis": "REDIS_URL does not answer PING (QRW_READY_NEEDS_REDIS)",
}


def _parameters(request: Request, settings: Settings) -> tuple[rules.Want, int | None]:
    """The query parameters, by the request rules every edge shares (`worker.rules`)."""
    try:
        want = rules.want(request.query_params.get("want", settings.want))
        raw = request.query_params.get("deadline_ms")
        return want, None if raw is None else rules.deadline_ms_text(raw)
    except rules.RuleViolation as exc:
        raise ScanFailed(ErrorCode.INVALID_REQUEST, str(exc)) from exc


def _scan(
    engine: Engine, data: bytes, deadline_ms: int | None, want: rules.Want
) -> tuple[ScanResult, dict[str, Any]]:
    """The scan and its JSON form, in a scan thread: the form parses each code's payload
    (worker.schemes), pure Python that should not hold up the event loop."""
    result = engine.scan(data, deadline_ms=deadline_ms, want=want)
    return result, result.to_dict()


def _answer(
    result: ScanResult, document: dict[str, Any], settings: Settings, started: float
) -> Response:
    metrics.observe_scan(document, "http")  # the answer's own form: payloads parsed once
    body = _shape(result, document, settings, started)
    status = STATUS.get(result.error.code, 500) if result.error else 200
    response = JSONResponse(body, status_code=status)
    log.info(
        "detect",
        status=status,
        codes=len(result.codes),
        error=result.error.code.value if result.error else None,
        ms=body["latency_ms"],
    )
    return response


def _shape(
    result: ScanResult, document: dict[str, Any], settings: Settings, started: float
) -> dict[str, Any]:
    """The original service's fields first (existing callers keep working), then ours
    (`document`, the result's JSON form: codes with their payloads)."""
    timings = result.timings_ms
    preprocess = sum(timings.get(k, 0.0) for k in _PREPROCESS)
    inference = sum(v for k, v in timings.items() if k not in (*_PREPROCESS, "total"))
    latency = _ms(started)
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


def _error(code: ErrorCode, message: str, *, close: bool, retry_after: bool = False) -> Response:
    """A failure answer. `close`: the body was not read to its end, so the connection
    cannot carry another request and is closed after this answer."""
    status = STATUS.get(code, 500)
    log.info("detect", status=status, error=code.value, message=message[:200])
    return _error_response(status, code, message, close=close, retry_after=retry_after)


def _error_response(
    status: int,
    code: ErrorCode,
    message: str,
    *,
    close: bool,
    retry_after: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if retry_after:
        headers["Retry-After"] = "1"
    if close:
        headers["Connection"] = "close"
    return JSONResponse(
        {"success": False, "error": {"code": code.value, "message": message}},
        status_code=status,
        headers=headers,
    )


def _client_closed(exc: ClientDisconnect, started: float) -> Response:
    """Not an error of ours: one event, counted, and an answer nobody will read."""
    received = exc.received if isinstance(exc, ClientClosed) else None
    log.info(
        "detect", status=_CLIENT_CLOSED, error="client_closed", received=received, ms=_ms(started)
    )
    return Response(status_code=_CLIENT_CLOSED)


def _internal_error(exc: Exception, *, close: bool) -> Response:
    log.error("detect", status=500, error=ErrorCode.INTERNAL_ERROR.value, exc_info=exc)
    return _error_response(500, ErrorCode.INTERNAL_ERROR, _bug_message(exc), close=close)


def _bug_message(exc: Exception) -> str:
    return f"internal error ({type(exc).__name__}); the shim's log holds the details"


async def _framework_error(request: Request, exc: Exception) -> Response:
    """What Starlette itself refuses (no such route, a method the route does not take), in
    the shape of every other error; its headers (`Allow` on a 405) kept."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    if exc.status_code in _BODILESS:
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = f"{request.method} {rules.quote(request.url.path)}: {exc.detail}"
    allowed = (exc.headers or {}).get("Allow")
    if allowed:
        message += f"; this path takes {allowed}"
    code = ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.INVALID_REQUEST
    return _error_response(exc.status_code, code, message, close=False, headers=exc.headers)


async def _unhandled_error(request: Request, exc: Exception) -> Response:
    """A bug outside /detect (whose handler answers its own): the JSON 500 that /detect
    gives. Starlette raises the exception on after this answer, and uvicorn logs its trace."""
    return _error_response(500, ErrorCode.INTERNAL_ERROR, _bug_message(exc), close=False)


def _model_name(settings: Settings) -> str:
    """The original service's `model` field: the detector models and their runtime."""
    models = settings.model_names
    return f"{models}/{settings.backend}" if models else "classical"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
