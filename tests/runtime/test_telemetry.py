"""Spans leave over OTLP when configured; every server exposes Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings
from services.suite.ports import free_port
from tests.runtime.servicers import ProbeInference, inference_service
from tests.support.health import wait_serving


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps the span names it gets."""

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.services: set[str] = set()
        self.received = asyncio.Event()

    async def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.span_names += [span.name for span in scope_spans.spans]
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_are_exported_over_otlp_when_configured(tmp_path):
    collector = Collector()
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    collector_port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    port = free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.runtime.servicers",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        env=env,
    )
    try:
        await wait_serving(f"127.0.0.1:{port}", process=process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await stub.Generate(inference_pb2.GenerateRequest(prompt="traced"), timeout=5)
        await asyncio.wait_for(collector.received.wait(), 15)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        await receiver.stop(0)
    assert "/lattice.v1.InferenceService/Generate" in collector.span_names
    assert "lattice-probe" in collector.services


async def test_metrics_endpoint_counts_rpcs():
    server = LatticeServer(
        [inference_service(ProbeInference())], ServerSettings(port=0, metrics_port=0)
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await stub.Generate(inference_pb2.GenerateRequest(prompt="counted"), timeout=5)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        await server.stop(0)
    text = body.decode()
    assert (
        'lattice_rpc_requests_total{code="OK",method="/lattice.v1.InferenceService/Generate"} 1.0'
    ) in text
    assert "lattice_rpc_duration_seconds_bucket" in text
