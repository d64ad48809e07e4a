"""The Triton backend against a real `tritonserver` (CPU, from nvidia-pytriton)
serving a repository made by `export_triton_repository` from tiny models.

One server per module (startup is the expensive part): a decoupled generate
model, the same artifact exported unary, and an encoder. Every answer is
compared with Lattice's local transformers backend on the same artifact.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lattice._errors import InvalidArgument, Unavailable
from services.inference.backends import FinishReason, GenerationParams, LoadSpec, Task
from services.inference.transformers_backend import TransformersBackend
from services.inference.triton_backend import TritonBackend
from services.inference.triton_export import (
    GENERATE,
    ExportOptions,
    export_triton_repository,
    render_config,
)
from tests.support.ports import free_port
from tests.support.tiny_models import build_tiny_causal_lm, build_tiny_encoder
from tests.support.triton_server import TritonProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

STREAM, UNARY, ENCODER = "tiny_lm", "tiny_lm_unary", "tiny_enc"
PROMPTS = ("Once upon a time", "The robot counted the stars", "Hello lattice!")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("triton-artifacts")
    return {
        "lm": build_tiny_causal_lm(base / "lm", seed=3),
        "enc": build_tiny_encoder(base / "enc", seed=4),
    }


@pytest.fixture(scope="module")
def triton(artifacts, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton-repo")
    export_triton_repository(artifacts["lm"], repo, STREAM)
    export_triton_repository(artifacts["lm"], repo, UNARY, decoupled=False)
    export_triton_repository(artifacts["enc"], repo, ENCODER)
    server = TritonProcess(repo, tmp_path_factory.mktemp("triton-run"))
    server.start(wait_models=[STREAM, UNARY, ENCODER])
    yield server
    server.stop()


def spec(name: str, task: Task, uri: str = "", model_dir: Path | None = None) -> LoadSpec:
    return LoadSpec(model_name=name, version=1, task=task, artifact_uri=uri, model_dir=model_dir)


async def loaded(backend):
    await backend.load()
    return backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_lm(artifacts):
    backend = await loaded(
        TransformersBackend(spec("lm", Task.GENERATE, model_dir=artifacts["lm"]))
    )
    yield backend
    await backend.unload()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_enc(artifacts):
    backend = await loaded(TransformersBackend(spec("enc", Task.EMBED, model_dir=artifacts["enc"])))
    yield backend
    await backend.unload()


def triton_backend(triton, model: str, task: Task = Task.GENERATE, **kwargs) -> TritonBackend:
    uri = f"triton://{triton.grpc_address}/{model}"
    return TritonBackend(spec(model, task, uri), **kwargs)


@pytest_asyncio.fixture(loop_scope="module")
async def streaming(triton):
    backend = await loaded(triton_backend(triton, STREAM))
    yield backend
    await backend.unload()


@pytest_asyncio.fixture(loop_scope="module")
async def unary(triton):
    backend = await loaded(triton_backend(triton, UNARY))
    yield backend
    await backend.unload()


async def collect(stream):
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


def triton_counter(triton, name: str, model: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics_port}/metrics").read()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text.decode(), re.M)
    return float(match.group(1)) if match else 0.0


# -- greedy equality with the local backend -------------------------------------


async def test_load_reads_transaction_policy(streaming, unary):
    assert streaming.decoupled is True
    assert unary.decoupled is False
    assert await streaming.health() and await unary.health()


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_unary_model_infer_matches_local_greedy(unary, local_lm, prompt):
    params = GenerationParams(max_new_tokens=24)
    remote = await unary.generate(prompt, params)
    local = await local_lm.generate(prompt, params)
    assert remote == local
    assert remote.completion_tokens > 0


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_stream_matches_local_greedy(streaming, local_lm, prompt):
    params = GenerationParams(max_new_tokens=24)
    remote = await collect(streaming.stream(prompt, params))
    local = await collect(local_lm.stream(prompt, params))
    assert "".join(c.delta for c in remote) == "".join(c.delta for c in local)
    assert [c.last for c in remote] == [False] * (len(remote) - 1) + [True]
    final, expected = remote[-1], local[-1]
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == (
        expected.finish_reason,
        expected.prompt_tokens,
        expected.completion_tokens,
    )
    assert len(remote) > 2  # really streamed, not one blob


async def test_unary_on_decoupled_model_collects_the_stream(streaming, local_lm):
    params = GenerationParams(max_new_tokens=16)
    assert await streaming.generate(PROMPTS[0], params) == await local_lm.generate(
        PROMPTS[0], params
    )


async def test_stop_sequence_and_seeded_sampling_match_local(streaming, unary, local_lm):
    greedy = await local_lm.generate(PROMPTS[1], GenerationParams(max_new_tokens=24))
    stop = greedy.text[5:8]  # a stop string the greedy output really contains
    params = GenerationParams(max_new_tokens=24, stop=(stop,))
    expected = await local_lm.generate(PROMPTS[1], params)
    assert expected.finish_reason is FinishReason.STOP_SEQUENCE
    assert await unary.generate(PROMPTS[1], params) == expected
    assert await streaming.generate(PROMPTS[1], params) == expected

    seeded = GenerationParams(max_new_tokens=20, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    expected = await local_lm.generate(PROMPTS[2], seeded)
    assert await unary.generate(PROMPTS[2], seeded) == expected
    assert await streaming.generate(PROMPTS[2], seeded) == expected


async def test_embeddings_match_local(triton, local_enc):
    backend = await loaded(triton_backend(triton, ENCODER, Task.EMBED))
    try:
        texts = ["hello world", "the robot counts the stars", "sea shells by the sea shore"]
        for normalize in (False, True):
            remote = await backend.embed(texts, normalize=normalize)
            local = await local_enc.embed(texts, normalize=normalize)
            assert remote.token_counts == local.token_counts
            for got, want in zip(remote.vectors, local.vectors, strict=True):
                assert got == pytest.approx(want, abs=1e-5)
        many = [f"text number {i}" for i in range(70)]  # > the model's max_batch_size (32)
        result = await backend.embed(many, normalize=True)
        assert len(result.vectors) == 70
        assert result.vectors[69] == pytest.approx(
            (await local_enc.embed(many[69:], normalize=True)).vectors[0], abs=1e-5
        )
    finally:
        await backend.unload()


# -- cancellation, errors, tracing ------------------------------------------------


async def test_closing_the_stream_stops_the_model(triton, streaming):
    before = triton_counter(triton, "lattice_triton_generated_tokens_total", STREAM)
    cancelled = triton_counter(triton, "lattice_triton_cancelled_generations_total", STREAM)
    stream = streaming.stream(PROMPTS[0], GenerationParams(max_new_tokens=400))
    started = time.perf_counter()
    for _ in range(3):
        await anext(stream)
    per_token = (time.perf_counter() - started) / 3  # upper bound: includes the prefill
    await stream.aclose()
    deadline = time.monotonic() + 10
    while triton_counter(triton, "lattice_triton_cancelled_generations_total", STREAM) == cancelled:
        produced = triton_counter(triton, "lattice_triton_generated_tokens_total", STREAM) - before
        assert time.monotonic() < deadline, f"the model never saw the cancel ({produced} tokens)"
        await asyncio.sleep(0.02)
    produced = triton_counter(triton, "lattice_triton_generated_tokens_total", STREAM) - before
    # 3 chunks need >= 3 tokens; stopping "within 50 ms" allows 50 ms worth of tokens more.
    assert 3 <= produced <= 3 + 0.05 / per_token + 5
    assert produced < 100, "the model kept generating after the stream was closed"


async def test_invalid_parameters_are_invalid_argument_on_both_paths(streaming, unary):
    bad = GenerationParams(max_new_tokens=0)
    with pytest.raises(InvalidArgument) as unary_error:
        await unary.generate("hello", bad)
    with pytest.raises(InvalidArgument) as stream_error:
        await collect(streaming.stream("hello", bad))
    assert unary_error.value.field == stream_error.value.field == "parameters.max_new_tokens"
    with pytest.raises(InvalidArgument):
        await unary.generate("word " * 600, GenerationParams(max_new_tokens=4))  # > context


async def test_triton_calls_are_child_client_spans_with_trace_context(triton):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    backend = await loaded(triton_backend(triton, UNARY, tracer_provider=provider))
    try:
        with provider.get_tracer("test").start_as_current_span("request") as parent:
            await backend.generate("hi", GenerationParams(max_new_tokens=2))
            await collect(backend.stream("hi", GenerationParams(max_new_tokens=2)))
    finally:
        await backend.unload()
    calls = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    methods = [s.attributes["rpc.method"] for s in calls]
    assert "ModelInfer" in methods and "ModelStreamInfer" in methods
    for span in calls:
        if span.attributes["rpc.method"] != "ModelReady":
            assert span.parent.span_id == parent.get_span_context().span_id
            assert span.context.trace_id == parent.get_span_context().trace_id
            assert span.attributes["triton.model_name"] == UNARY


async def test_unknown_model_or_no_server_is_unavailable(triton):
    missing = triton_backend(triton, "no_such_model", ready_timeout=0.3)
    with pytest.raises(Unavailable, match="not ready"):
        await missing.load()
    nobody = TritonBackend(
        spec("m", Task.GENERATE, f"triton://127.0.0.1:{free_port()}/m"), ready_timeout=0.3
    )
    with pytest.raises(Unavailable):
        await nobody.load()


ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()[0]
            out = {
                "TEXT": np.array([prompt[::-1]], dtype=np.object_),
                "TOKEN_IDS": np.array([1], dtype=np.int64),
                "FINISH_REASON": np.array([b"length"], dtype=np.object_),
                "PROMPT_TOKENS": np.array([1], dtype=np.int32),
                "COMPLETION_TOKENS": np.array([1], dtype=np.int32),
            }
            tensors = [pb_utils.Tensor(name, value) for name, value in out.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


async def test_triton_going_down_is_unavailable(tmp_path):
    # A model Triton already serves (no torch: starts in a second), on its own server.
    model = tmp_path / "repo" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    (model / "config.pbtxt").write_text(
        render_config("echo", GENERATE, ExportOptions(decoupled=False, device="cpu"))
    )
    server = TritonProcess(tmp_path / "repo", tmp_path / "run").start(wait_models=["echo"])
    backend = await loaded(triton_backend(server, "echo"))
    try:
        assert (await backend.generate("abc", GenerationParams(max_new_tokens=3))).text == "cba"
        server.kill()
        assert await backend.health() is False
        with pytest.raises(Unavailable):
            await backend.generate("hi", GenerationParams(max_new_tokens=3))
        with pytest.raises(Unavailable):
            await collect(backend.stream("hi", GenerationParams(max_new_tokens=3)))
    finally:
        await backend.unload()
        server.stop()
