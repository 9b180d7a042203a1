"""structlog set-up: readable on a terminal, one JSON object per line elsewhere."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def is_json() -> bool:
    """JSON lines unless a person is watching the terminal."""
    return not sys.stderr.isatty()


def configure_logging(json_output: bool | None = None, level: int = logging.INFO) -> None:
    if json_output is None:
        json_output = is_json()
    renderer: structlog.typing.Processor
    factory: structlog.typing.WrappedLogger
    if json_output:
        # orjson renders bytes: a delivery's log line costs a few microseconds
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
