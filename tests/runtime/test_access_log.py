"""The access log: one JSON line per RPC, the same whether rendered directly or via
logging, and written in batches when the server is set up so."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging

import grpc
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings
from services.runtime.context import request_id_var
from services.runtime.logs import AccessLog, configure_logging
from tests.runtime.servicers import ProbeInference, inference_service


def _lines(stream: io.StringIO) -> list[dict]:
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    for row in rows:
        assert row.pop("ts").endswith("Z")
    return rows


class _CountingStream(io.StringIO):
    """A StringIO that counts write calls (one per batch when lines are batched)."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@contextlib.contextmanager
def _json_logging_to(stream: io.StringIO):
    """configure_logging's JSON handler, writing to `stream`; restores the root logger."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        configure_logging("test", "INFO", json_lines=True)
        root.handlers[0].stream = stream
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


async def test_lines_are_batched_and_failures_are_written_at_once():
    """With flush_after, successful lines wait and go out in one write, each with
    the ids it had when its RPC ended; a failure is written at once, after the
    lines before it; flush() writes what is left."""
    stream = _CountingStream()
    with _json_logging_to(stream):
        log = AccessLog(flush_after=0.05)
        for n, request_id in enumerate(("first", "second")):
            token = request_id_var.set(request_id)
            log.served(f"/pkg.Service/M{n}", "OK", 0.001)
            request_id_var.reset(token)
        assert stream.getvalue() == ""  # nothing yet: the batch waits
        await asyncio.sleep(0.15)
        batch = _lines(stream)
        assert [(r["rpc_method"], r["request_id"]) for r in batch] == [
            ("/pkg.Service/M0", "first"),
            ("/pkg.Service/M1", "second"),
        ]
        assert stream.writes == 1

        log.served("/pkg.Service/M2", "OK", 0.001)
        log.failed("/pkg.Service/M3", "NOT_FOUND", 0.001, "no such model")
        log.served("/pkg.Service/M4", "OK", 0.001)
        after_batch = [r["rpc_method"] for r in _lines(stream)[2:]]
        assert after_batch == ["/pkg.Service/M2", "/pkg.Service/M3"]
        log.flush()
        assert [r["rpc_method"] for r in _lines(stream)[4:]] == ["/pkg.Service/M4"]


def test_without_a_running_loop_lines_are_written_at_once():
    stream = io.StringIO()
    with _json_logging_to(stream):
        AccessLog(flush_after=0.05).served("/pkg.Service/Method", "OK", 0.001)
    assert [r["rpc_method"] for r in _lines(stream)] == ["/pkg.Service/Method"]


def test_direct_lines_equal_the_logging_path():
    """The fast path (our handler alone) writes exactly what JsonFormatter would."""
    rpc_logger = logging.getLogger("lattice.rpc")
    stream = io.StringIO()
    token = context.attach(
        trace.set_span_in_context(
            NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED)))
        )
    )
    request_token = request_id_var.set('id "quoted" \u00e9')
    try:
        with _json_logging_to(stream):
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
    direct_ok, direct_failed, logged_ok, logged_failed = _lines(stream)
    assert list(direct_ok.items()) == list(logged_ok.items())
    assert list(direct_failed.items()) == list(logged_failed.items())
    assert direct_ok["msg"] == "/pkg.Service/Method OK 0.3ms"
    assert direct_ok["trace_id"] == f"{0xABC:032x}"
    assert direct_ok["request_id"] == 'id "quoted" \u00e9'
    assert direct_failed["level"] == "WARNING"
    assert direct_failed["error"] == 'model "m" not found'


async def test_server_writes_pending_lines_when_it_stops():
    """A served RPC's line waits for its batch; stopping the server writes it."""
    stream = io.StringIO()
    with _json_logging_to(stream):
        server = LatticeServer(
            [inference_service(ProbeInference())],
            ServerSettings(port=0, access_log_flush_ms=60_000),
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                await stub.Generate(inference_pb2.GenerateRequest(prompt="logged"), timeout=5)
            assert "InferenceService/Generate" not in stream.getvalue()
        finally:
            await server.stop(0)
    served = [r for r in _lines(stream) if r.get("rpc_method", "").endswith("/Generate")]
    assert [(r["rpc_code"], r["level"]) for r in served] == [("OK", "INFO")]
    assert len(served[0]["request_id"]) == 32
