"""Structured logging: one JSON object per line, with trace and request ids."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string

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


class _LatticeHandler(logging.StreamHandler):
    """The stderr handler `configure_logging` installs (recognisable, so it is replaced)."""

    def __init__(self, json_lines: bool) -> None:
        super().__init__(sys.stderr)
        self.json_lines = json_lines

    def write_line(self, line: str) -> None:
        """Write one finished line the way `emit` would, under the handler's lock."""
        self.acquire()
        try:
            self.stream.write(line)
            self.flush()
        finally:
            self.release()


def _direct_json_handler(logger: logging.Logger, level: int) -> _LatticeHandler | None:
    """Our JSON handler, when it is the only place a `logger` record at `level` would go."""
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # up to, not including, root
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    if node is None or node.filters or len(node.handlers) != 1:
        return None
    handler = node.handlers[0]
    if type(handler) is not _LatticeHandler or not handler.json_lines or handler.level > level:
        return None
    return handler


class AccessLog:
    """One line per RPC on the "lattice.rpc" logger, at a fraction of `Logger.log`'s cost.

    Successful calls log at INFO, failures at WARNING; `enabled=False` (setting
    `access_log`) keeps only the failures. When our JSON stderr handler is the
    only destination (as `run_service` sets it up) the line is rendered here
    directly, with the same fields `JsonFormatter` writes; otherwise (other
    handlers, filters, plain text, tests capturing logs) it is an ordinary
    record through `logging`.

    With `flush_after` > 0 (setting `access_log_flush_ms`) successful lines are
    kept, with their time, trace and request ids, and written together at most
    that many seconds later, as nginx's `access_log ... flush=` does: one write
    and one hot formatting loop per batch instead of work on every call. A
    failure line is written at once, after the lines before it; `flush()` writes
    what is pending (the server calls it when it stops).
    """

    #: Lines kept before a batch is written whatever the time.
    max_pending = 512

    def __init__(
        self,
        enabled: bool = True,
        logger: logging.Logger | None = None,
        flush_after: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self._logger = logger or logging.getLogger("lattice.rpc")
        self._name_json = json.dumps(self._logger.name)
        self._methods: dict[str, str] = {}
        self._second = -1
        self._second_text = ""
        self._flush_after = flush_after
        self._pending: list[tuple] = []
        self._pending_handler: _LatticeHandler | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def served(self, method: str, code: str, seconds: float) -> None:
        if self.enabled and self._logger.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, method, code, seconds, "")

    def failed(self, method: str, code: str, seconds: float, error: str) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, method, code, seconds, error)

    def flush(self) -> None:
        """Write the pending lines now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        pending, handler = self._pending, self._pending_handler
        if not pending or handler is None:
            return
        self._pending, self._pending_handler = [], None
        handler.write_line("".join(self._json_line(*entry) for entry in pending))

    def _emit(self, level: int, method: str, code: str, seconds: float, error: str) -> None:
        handler = _direct_json_handler(self._logger, level)
        if handler is None:
            self.flush()  # what was kept comes first
            self._log_record(level, method, code, seconds, error)
            return
        entry = (
            time.time(),
            level,
            method,
            code,
            seconds,
            error,
            trace.get_current_span().get_span_context(),
            request_id_var.get(),
        )
        if handler is not self._pending_handler:
            self.flush()  # lines go where they were meant to, in order
        if level < logging.WARNING and self._keep_for_later(handler):
            self._pending.append(entry)
            if len(self._pending) >= self.max_pending:
                self.flush()
            return
        self.flush()
        handler.write_line(self._json_line(*entry))

    def _keep_for_later(self, handler: _LatticeHandler) -> bool:
        """Arrange a flush if there is none; False when lines cannot wait (no loop)."""
        if self._flush_after <= 0:
            return False
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._flush_timer = loop.call_later(self._flush_after, self.flush)
        self._pending_handler = handler
        return True

    def _log_record(self, level: int, method: str, code: str, seconds: float, error: str) -> None:
        logger = self._logger
        record = logger.makeRecord(
            logger.name, level, __file__, 0, "%s %s %.1fms", (method, code, seconds * 1000), None
        )
        record.rpc_method = method
        record.rpc_code = code
        record.duration_ms = round(seconds * 1000, 3)
        record.error = error
        logger.handle(record)

    def _json_line(
        self,
        now: float,
        level: int,
        method: str,
        code: str,
        seconds: float,
        error: str,
        span_context: trace.SpanContext,
        request_id: str,
    ) -> str:
        second = int(now)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        method_json = self._methods.get(method)
        if method_json is None:
            method_json = self._methods[method] = json.dumps(method)
        ms = seconds * 1000
        line = (
            f'{{"ts": "{self._second_text}.{int((now - second) * 1000):03d}Z", '
            f'"level": "{logging.getLevelName(level)}", "logger": {self._name_json}, '
            f'"msg": "{method_json[1:-1]} {code} {ms:.1f}ms", "rpc_method": {method_json}, '
            f'"rpc_code": "{code}", "duration_ms": {round(ms, 3)}'
        )
        if error:
            line += f', "error": {json.dumps(error)}'
        if span_context.is_valid:
            line += (
                f', "trace_id": "{span_context.trace_id:032x}"'
                f', "span_id": "{span_context.span_id:016x}"'
            )
        if request_id:
            line += f', "request_id": {_json_string(request_id)}'
        return line + "}\n"


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Route all logging to stderr with ids attached; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lattice", False):
            root.removeHandler(handler)
    handler = _LatticeHandler(json_lines)
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


def logging_setup() -> tuple[str, bool] | None:
    """(level, json_lines) as `configure_logging` last set them in this
    process, None if it was not called: what a helper process (a decode
    process) needs to log the same way."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _LatticeHandler):
            return logging.getLevelName(root.level), handler.json_lines
    return None
