"""Spans request -> queue -> batch -> backend (Redis as child spans) and the
Prometheus metrics, from a real service with an in-memory span exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from lattice.v1 import inference_pb2
from services.suite.embedded import Lab, deploy_encoder, deploy_lm, generate_request


@pytest.fixture
async def traced(tmp_path, redis_server, model_dirs):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    lab = await Lab(tmp_path, tracer_provider=provider, redis_url=redis_server.url).start()
    await deploy_lm(lab, model_dirs)
    await deploy_encoder(lab, model_dirs)
    spans.clear()
    yield lab, spans
    await lab.stop()


def _by_name(spans, name):
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert found, f"no span {name!r} in {[s.name for s in spans.get_finished_spans()]}"
    return found[-1]


def _parent(spans, span):
    return next(s for s in spans.get_finished_spans() if s.context.span_id == span.parent.span_id)


async def test_generate_spans_nest_and_redis_calls_are_children(traced):
    lab, spans = traced
    await lab.stub.Generate(generate_request("lm", max_new_tokens=4))
    request = _by_name(spans, "inference.generate")
    backend = _by_name(spans, "inference.backend.generate")
    assert _parent(spans, request).name.endswith("InferenceService/Generate")  # the RPC span
    assert backend.context.trace_id == request.context.trace_id
    redis_spans = [
        s
        for s in spans.get_finished_spans()
        if s.attributes.get("db.system") == "redis" or s.attributes.get("db.system.name") == "redis"
    ]
    assert {s.name for s in redis_spans} >= {"GET", "SET"}
    assert all(s.context.trace_id == request.context.trace_id for s in redis_spans)
    assert request.attributes["gen_ai.response.model"] == "lm:1"


async def test_embed_spans_go_request_queue_batch_backend(traced):
    lab, spans = traced
    await lab.stub.Embed(inference_pb2.EmbedRequest(model="enc", inputs=["a b"], skip_cache=True))
    request = _by_name(spans, "inference.embed")
    queue = _by_name(spans, "embed.enc:1.queue")
    batch = _by_name(spans, "embed.enc:1.run")
    backend = _by_name(spans, "inference.backend.embed")
    assert _parent(spans, queue).context.span_id == request.context.span_id
    assert [link.context.span_id for link in batch.links] == [queue.context.span_id]
    assert backend.parent.span_id == batch.context.span_id
    assert batch.attributes["batch.rows"] == 1


async def test_prometheus_exposes_genai_and_service_metrics(traced):
    lab, _spans = traced
    await lab.stub.Generate(generate_request("lm", max_new_tokens=4))
    async for _ in lab.stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="lm",
            prompt="Hello there",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=4),
        )
    ):
        pass
    await lab.stub.Embed(inference_pb2.EmbedRequest(model="enc", inputs=["x"]))
    text = generate_latest(lab.inference.metrics_registry).decode()
    for name in (
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "lattice_inference_queue_duration_seconds_bucket",
        "lattice_inference_batch_size_bucket",
        "lattice_inference_cache_lookups_total",
        'lattice_inference_loaded_models{backend="transformers",gen_ai_request_model="lm"',
        "lattice_process_resident_memory_bytes",
        "lattice_process_cpu_percent",
    ):
        assert name in text, name
    assert (
        lab.metric(
            "gen_ai_client_token_usage_count",
            {
                "gen_ai_operation_name": "text_completion",
                "gen_ai_request_model": "lm",
                "gen_ai_token_type": "output",
            },
        )
        == 2
    )
