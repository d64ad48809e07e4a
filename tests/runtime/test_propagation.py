"""Trace context, request ids and deadlines travel from caller to server and onward."""

from __future__ import annotations

import time

import grpc
from opentelemetry.trace import NoOpTracerProvider, SpanKind

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, create_channel
from services.runtime.context import REQUEST_ID_KEY, deadline_var, request_id_var
from tests.runtime.servicers import HeaderEcho, ProbeInference, inference_service

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"


async def _generate_traced(address: str, prompt: str) -> None:
    """A Generate as a traced caller sends it: its span is the parent of the server's."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.Generate(
            inference_pb2.GenerateRequest(prompt=prompt),
            metadata=[("traceparent", f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01")],
            timeout=5,
        )


async def test_client_trace_context_is_parent_of_server_span(probe_server, spans):
    await _generate_traced(probe_server.address, "hi")
    (server_span,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert f"{server_span.context.trace_id:032x}" == TRACE_ID
    assert f"{server_span.parent.span_id:016x}" == CLIENT_SPAN_ID
    assert server_span.parent.is_remote


async def test_a_call_to_another_service_continues_the_trace(probe_server, spans, tracer_provider):
    downstream = LatticeServer(
        [inference_service(ProbeInference())],
        ServerSettings(port=0),
        tracer_provider=tracer_provider,
    )
    await downstream.start()
    try:
        await _generate_traced(probe_server.address, f"call:{downstream.address}")
    finally:
        await downstream.stop(0)
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    health_server = next(
        s for s in finished if s.name.endswith("Health/Check") and s.kind == SpanKind.SERVER
    )
    hop = by_id[health_server.parent.span_id]  # the client span inside the first server
    assert hop.kind == SpanKind.CLIENT
    assert hop.attributes["rpc.grpc.status_code"] == 0  # the call's own status, read publicly
    first_server = by_id[hop.parent.span_id]
    assert first_server.kind == SpanKind.SERVER
    assert {f"{s.context.trace_id:032x}" for s in (health_server, hop, first_server)} == {TRACE_ID}


async def test_request_id_and_shrinking_deadline_are_forwarded(probe_server):
    """A call made while serving a 2 s request carries its request id and < 2 s left."""
    echo = LatticeServer([inference_service(HeaderEcho())], ServerSettings(port=0))
    await echo.start()
    try:
        # Bind the request context exactly as the RPC wrapper does for A.
        request_id_var.set("req-123")
        deadline_var.set(time.monotonic() + 2.0)
        async with create_channel(echo.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            reply = await stub.Generate(inference_pb2.GenerateRequest(prompt="x"))
    finally:
        await echo.stop(0)
    forwarded_id, remaining = reply.text.split("|")
    assert forwarded_id == "req-123"
    # Without propagation the default 30 s would arrive; grpc-timeout rounding on the
    # wire can add a few milliseconds, never a second.
    assert 1.0 < float(remaining) < 2.05


async def test_inbound_request_id_is_kept(probe_server):
    servicer = probe_server.services[0].servicer
    async with grpc.aio.insecure_channel(probe_server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await stub.Generate(
            inference_pb2.GenerateRequest(prompt="x"),
            metadata=[(REQUEST_ID_KEY, "abc-1")],
            timeout=5,
        )
        await stub.Generate(inference_pb2.GenerateRequest(prompt="y"), timeout=5)
    assert servicer.seen_request_ids[0] == "abc-1"
    assert len(servicer.seen_request_ids[1]) == 32  # a fresh id for a call without one


async def test_without_an_sdk_the_callers_trace_passes_through(spans, tracer_provider):
    """No exporter, no SDK: nothing is recorded, yet the next hop continues the caller's trace."""
    untraced = NoOpTracerProvider()
    downstream = LatticeServer(
        [inference_service(ProbeInference())],
        ServerSettings(port=0),
        tracer_provider=tracer_provider,
    )
    middle = LatticeServer(
        [inference_service(ProbeInference(untraced))],
        ServerSettings(port=0),
        tracer_provider=untraced,
    )
    await downstream.start()
    await middle.start()
    try:
        await _generate_traced(middle.address, f"call:{downstream.address}")
    finally:
        await middle.stop(0)
        await downstream.stop(0)
    (health_server,) = [
        s
        for s in spans.get_finished_spans()
        if s.name.endswith("Health/Check") and s.kind == SpanKind.SERVER
    ]
    assert f"{health_server.context.trace_id:032x}" == TRACE_ID
    assert f"{health_server.parent.span_id:016x}" == CLIENT_SPAN_ID


class TraceHeaders(inference_pb2_grpc.InferenceServiceServicer):
    """Answers with every traceparent value the call carried."""

    async def Generate(self, request, context):
        values = [v for k, v in context.invocation_metadata() if k == "traceparent"]
        return inference_pb2.GenerateResponse(text=",".join(values))


async def test_a_channel_injects_one_trace_context_unless_told_not_to(tracer_provider):
    server = LatticeServer([inference_service(TraceHeaders())], ServerSettings(port=0))
    await server.start()
    own = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
    try:
        async with create_channel(server.address, tracer_provider=tracer_provider) as traced:
            stub = inference_pb2_grpc.InferenceServiceStub(traced)
            injected = (await stub.Generate(inference_pb2.GenerateRequest())).text
            reply = await stub.Generate(
                inference_pb2.GenerateRequest(), metadata=[("traceparent", own)]
            )
            kept = reply.text
        async with create_channel(
            server.address, tracer_provider=tracer_provider, trace_calls=False
        ) as untraced:
            stub = inference_pb2_grpc.InferenceServiceStub(untraced)
            none = (await stub.Generate(inference_pb2.GenerateRequest())).text
    finally:
        await server.stop(0)
    assert injected.startswith("00-") and "," not in injected
    assert kept == own  # the caller's own context, not a second one
    assert none == ""
