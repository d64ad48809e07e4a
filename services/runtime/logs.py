"""Structured logging: one JSON object per line, with trace and request ids."""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

from services.runtime.context import request_id_var


class _ContextFilter(logging.Filter):
    """Stamps every record with the current trace id, span id and request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = f"{span_context.trace_id:032x}" if span_context.is_valid else ""
        record.span_id = f"{span_context.span_id:016x}" if span_context.is_valid else ""
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Renders a record and its `extra` fields as one JSON line."""

    _standard = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
    }

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not once per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._standard and value not in ("", None):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class AccessLog:
    """One line per RPC on the "lattice.rpc" logger, at a fraction of `Logger.log`'s cost.

    Records go through `logging` as usual (levels, handlers, filters apply),
    but are built directly: no caller lookup (a stack walk) and no `extra`
    merge. Successful calls log at INFO, failures at WARNING; `enabled=False`
    (setting `access_log`) keeps only the failures.
    """

    def __init__(self, enabled: bool = True, logger: logging.Logger | None = None) -> None:
        self.enabled = enabled
        self._logger = logger or logging.getLogger("lattice.rpc")

    def served(self, method: str, code: str, seconds: float) -> None:
        if self.enabled and self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, method, code, seconds, "")

    def failed(self, method: str, code: str, seconds: float, error: str) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, method, code, seconds, error)

    def _emit(self, level: int, method: str, code: str, seconds: float, error: str) -> None:
        logger = self._logger
        record = logger.makeRecord(
            logger.name, level, __file__, 0, "%s %s %.1fms", (method, code, seconds * 1000), None
        )
        record.rpc_method = method
        record.rpc_code = code
        record.duration_ms = round(seconds * 1000, 3)
        record.error = error
        logger.handle(record)


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Route all logging to stderr with ids attached; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lattice", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._lattice = True  # type: ignore[attr-defined]
    handler.addFilter(_ContextFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {service} %(name)s [%(trace_id)s] %(message)s"
            )
        )
    root.addHandler(handler)
    root.setLevel(level.upper())
