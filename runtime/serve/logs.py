"""Structured logs of the front door: one JSON object per line; no untrusted input is parsed
(handler output is passed through as a JSON string, so it cannot forge a line).

    {"ts": 1718000000.123, "level": "info", "logger": "handlerbox.serve", "msg": "invocation",
     "id": "...", "kind": "product", "app": "call_logger", "account_id": "82918",
     "event": "onCallCreate", "outcome": "ok", "status": 200, "duration_ms": 3.1,
     "queue_ms": 0.4, "total_ms": 3.9, "worker_pid": 4242, "host_calls": 0,
     "logs": "handler output..."}                       (handler_logs="attach")
    {"msg": "handler_output", "id": "...", "logs": "..."}  (handler_logs="separate")

The lines go through the `logging` logger "handlerbox.serve": `handlerbox serve` writes them
to stderr with `JsonFormatter`; a host that mounts the app routes them as it likes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TextIO

import orjson

from handlerbox.runtime.results import InvocationResult

log = logging.getLogger("handlerbox.serve")


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": round(record.created, 6), "level":
                                record.levelname.lower(), "logger": record.name,
                                "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(stream: TextIO, level: int = logging.INFO) -> logging.Handler:
    """Send handlerbox.serve's lines (and uvicorn's) to `stream` as JSON; returns the handler."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    for name in ("handlerbox.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return handler


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    """A lifecycle line (started, draining, app loaded, ...)."""
    log.log(level, message, extra={"fields": fields})


class InvocationLog:
    """Writes the line of each invocation; `handler_logs` says where the handler's output goes."""

    def __init__(self, handler_logs: str) -> None:
        self.handler_logs = handler_logs

    def invocation(self, invocation_id: str, kind: str, result: InvocationResult, status: int,
                   queue_ms: float, started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "id": invocation_id, "kind": kind, "app": result.app,
            "account_id": result.account_id, "event": result.event, "outcome": result.outcome,
            "status": status, "duration_ms": round(result.duration_ms, 3),
            "queue_ms": round(queue_ms, 3),
            "total_ms": round((time.monotonic() - started) * 1000.0, 3),
            "worker_pid": result.worker_pid, "host_calls": len(result.host_calls)}
        if result.error is not None:
            fields["error_type"] = result.error.type
        if result.logs and self.handler_logs == "attach":
            fields["logs"] = result.logs
        log.info("invocation", extra={"fields": fields})
        if result.logs and self.handler_logs == "separate":
            log.info("handler_output", extra={"fields": {"id": invocation_id, "app": result.app,
                                                         "logs": result.logs}})
