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

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
