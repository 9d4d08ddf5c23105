"""Structured logging: one JSON object per line on stderr, with the job id where there is one."""

from __future__ import annotations

import logging
import sys

import structlog

from worker.settings import Settings


def configure(settings: Settings) -> None:
    """structlog for our events, and the same JSON lines for stdlib loggers: RQ's at the
    configured level, other libraries' from WARNING up."""
    # Settings admit only the five standard names, so the lookup cannot miss.
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # Other libraries' INFO (botocore's "Found credentials ...", two lines per `qrw backfill`
    # command) is their chatter, not our operation: only their warnings and errors pass.
    root.setLevel(max(level, logging.WARNING))
    # RQ's lifecycle lines are the queue's own story: they keep the configured level. RQ
    # installs its own coloured handler unless its loggers already have one.
    for name in ("rq", "rq.worker", "rq.worker_pool", "rq.job", "rq.queue", "rq.registry"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
