"""The access log: one JSON line per RPC, the same whether rendered directly or via logging."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.runtime.context import request_id_var
from services.runtime.logs import AccessLog, configure_logging


def _lines(stream: io.StringIO) -> list[dict]:
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    for row in rows:
        assert row.pop("ts").endswith("Z")
    return rows


def test_direct_lines_equal_the_logging_path():
    """The fast path (our handler alone) writes exactly what JsonFormatter would."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    rpc_logger = logging.getLogger("lattice.rpc")
    stream = io.StringIO()
    token = context.attach(
        trace.set_span_in_context(
            NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED)))
        )
    )
    request_token = request_id_var.set('id "quoted" \u00e9')
    try:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        configure_logging("test", "INFO", json_lines=True)
        root.handlers[0].stream = stream
        log = AccessLog()
        log.served("/pkg.Service/Method", "OK", 0.000312)
        log.failed("/pkg.Service/Method", "NOT_FOUND", 0.0012, 'model "m" not found')
        forced = logging.Filter()  # any filter sends records through logging instead
        rpc_logger.addFilter(forced)
        try:
            log.served("/pkg.Service/Method", "OK", 0.000312)
            log.failed("/pkg.Service/Method", "NOT_FOUND", 0.0012, 'model "m" not found')
        finally:
            rpc_logger.removeFilter(forced)
        AccessLog(enabled=False).served("/pkg.Service/Method", "OK", 0.001)  # off: nothing
    finally:
        context.detach(token)
        request_id_var.reset(request_token)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    direct_ok, direct_failed, logged_ok, logged_failed = _lines(stream)
    assert list(direct_ok.items()) == list(logged_ok.items())
    assert list(direct_failed.items()) == list(logged_failed.items())
    assert direct_ok["msg"] == "/pkg.Service/Method OK 0.3ms"
    assert direct_ok["trace_id"] == f"{0xABC:032x}"
    assert direct_ok["request_id"] == 'id "quoted" \u00e9'
    assert direct_failed["level"] == "WARNING"
    assert direct_failed["error"] == 'model "m" not found'
