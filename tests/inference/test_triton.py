"""Triton serving against a real `tritonserver` (CPU, from nvidia-pytriton) on a
repository made by `export_triton_repository` from the tiny test models.

One server per module (startup is the expensive part): a decoupled generate
model, the same artifact exported unary, and an encoder. Every answer is
compared with Lattice's local transformers backend on the same artifact: first
the `TritonBackend` alone, then end to end through the registry and the
inference service (versions registered as `triton://` URIs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lattice.artifacts import pack_directory
from lattice.errors import FailedPrecondition, InvalidArgument, Unavailable
from lattice.v1 import common_pb2, inference_pb2, registry_pb2
from services.inference.backends import FinishReason, GenerationParams, LoadSpec, Task
from services.inference.chat import ChatTurn, render_default
from services.inference.serving import VersionState
from services.inference.transformers_backend import TransformersBackend
from services.inference.triton_backend import TritonBackend
from services.inference.triton_export import (
    GENERATE,
    ExportOptions,
    export_triton_repository,
    render_config,
)
from services.runtime.context import request_id_var
from services.suite.embedded import (
    EMBEDDING,
    GENERATION,
    Lab,
    deploy_encoder,
    deploy_lm,
    generate_request,
)
from services.suite.ports import free_port
from services.suite.triton import TritonProcess
from tests.support.triton_server import triton_factory  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

STREAM, UNARY, ENCODER = "tiny_lm", "tiny_lm_unary", "tiny_enc"
PROMPTS = ("Once upon a time", "The robot counted the stars", "Hello lattice!")


@pytest.fixture(scope="module")
def artifacts(model_dirs) -> dict[str, Path]:
    """The session's tiny models (tests/inference/conftest.py): the same bytes
    the service tests register as local versions."""
    return {"lm": model_dirs["lm1"], "enc": model_dirs["enc"]}


@pytest.fixture(scope="module")
def triton(artifacts, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton-repo")
    export_triton_repository(artifacts["lm"], repo, STREAM)
    export_triton_repository(artifacts["lm"], repo, UNARY, decoupled=False)
    export_triton_repository(artifacts["enc"], repo, ENCODER)
    server = TritonProcess(repo, tmp_path_factory.mktemp("triton-run"))
    server.start(wait_models=[STREAM, UNARY, ENCODER])
    yield server
    server.kill()  # a graceful stop unloads three models for ~5 s; nothing here needs it


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
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    closed = time.perf_counter()
    # The model counts its tokens when it stops, and counts a cancelled stop apart.
    while triton_counter(triton, "lattice_triton_cancelled_generations_total", STREAM) == cancelled:
        assert time.perf_counter() - closed < 10, "the model never saw the cancellation"
        await asyncio.sleep(0.005)
    stopped_after = time.perf_counter() - closed
    produced = triton_counter(triton, "lattice_triton_generated_tokens_total", STREAM) - before
    assert 3 <= produced < 200, produced  # 400 were asked for
    # Typically 10-30 ms here (incl. the metrics scrape); generous for a loaded CI box.
    assert stopped_after < 2.0


async def test_cancelling_a_unary_call_stops_the_model(triton, unary):
    cancelled = triton_counter(triton, "lattice_triton_cancelled_generations_total", UNARY)
    call = asyncio.ensure_future(unary.generate(PROMPTS[0], GenerationParams(max_new_tokens=400)))
    await asyncio.sleep(0.1)  # into the decode loop (400 tokens take ~0.5 s or more)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    closed = time.perf_counter()
    while triton_counter(triton, "lattice_triton_cancelled_generations_total", UNARY) == cancelled:
        assert time.perf_counter() - closed < 10, "the unary model never saw the cancellation"
        await asyncio.sleep(0.005)


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


async def test_model_without_the_task_contract_is_refused(triton):
    wrong = triton_backend(triton, STREAM, Task.EMBED)  # a generator asked to embed
    with pytest.raises(FailedPrecondition, match="export-triton"):
        await wrong.load()
    assert await wrong.health() is False  # the failed load closed its connection


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
            # "params" answers with the request parameters (forwarded headers included).
            text = request.parameters().encode() if prompt == b"params" else prompt[::-1]
            out = {
                "TEXT": np.array([text], dtype=np.object_),
                "TOKEN_IDS": np.array([1], dtype=np.int64),
                "FINISH_REASON": np.array([b"length"], dtype=np.object_),
                "PROMPT_TOKENS": np.array([1], dtype=np.int32),
                "COMPLETION_TOKENS": np.array([1], dtype=np.int32),
            }
            tensors = [pb_utils.Tensor(name, value) for name, value in out.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


@pytest.fixture
def echo_triton(request, tmp_path) -> TritonProcess:
    """A model Triton already serves (no torch: starts in seconds), on its own
    server, which forwards the trace and request-id headers to the model."""
    start = request.getfixturevalue("triton_factory")  # the shared fixture from tests.support
    root = tmp_path
    model = root / "repo" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    (model / "config.pbtxt").write_text(
        render_config("echo", GENERATE, ExportOptions(decoupled=False, device="cpu"))
    )
    forward = "--grpc-header-forward-pattern=traceparent|x-request-id"
    return start(root / "repo", wait_models=["echo"], extra_args=[forward])


async def test_trace_context_and_request_id_reach_triton(echo_triton):
    server = echo_triton
    provider = TracerProvider()
    backend = await loaded(triton_backend(server, "echo", tracer_provider=provider))
    token = request_id_var.set("req-42")
    try:
        with provider.get_tracer("test").start_as_current_span("request") as parent:
            seen = json.loads((await backend.generate("params", GenerationParams())).text)
    finally:
        request_id_var.reset(token)
        await backend.unload()
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["traceparent"].split("-")[2] != format(parent.get_span_context().span_id, "016x")
    assert seen["x-request-id"] == "req-42"


async def test_triton_going_down_is_unavailable(echo_triton):
    server = echo_triton
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


async def test_concurrent_streams_each_match_local(triton, streaming, local_lm):
    """9 streams at once on 4 model threads, for several rounds: every answer is
    the local one, and the server survives (unserialised `is_cancelled()` calls
    from several threads crashed Triton 24.10 within a few rounds)."""
    params = GenerationParams(max_new_tokens=16)
    prompts = [f"{p} {i}" for i in range(3) for p in PROMPTS]
    expected = {p: await local_lm.generate(p, params) for p in prompts}
    for _ in range(8):
        remote = await asyncio.gather(*(collect(streaming.stream(p, params)) for p in prompts))
        for prompt, chunks in zip(prompts, remote, strict=True):
            assert "".join(c.delta for c in chunks) == expected[prompt].text
            assert chunks[-1].completion_tokens == expected[prompt].completion_tokens
    assert "Signal (11)" not in triton.logs()


# -- end to end: registry -> inference service -> Triton ---------------------------


async def register_triton_version(lab: Lab, name: str, uri: str, task: int = GENERATION) -> None:
    await lab.create_model(name, task)
    await lab.reg.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name=name, artifact_uri=uri, format=common_pb2.ARTIFACT_FORMAT_TRITON
        )
    )
    await lab.deploy(name, {1: 100})


async def stream_text(lab: Lab, model: str, prompt: str, **params):
    request = inference_pb2.GenerateStreamRequest(
        model=model,
        prompt=prompt,
        parameters=inference_pb2.GenerationParameters(**params),
        skip_cache=True,
    )
    messages = [m async for m in lab.stub.GenerateStream(request)]
    return "".join(m.delta for m in messages), messages


@pytest_asyncio.fixture(loop_scope="module")
async def triton_lab(triton, model_dirs, tmp_path):
    """Registry + inference serving `remote` (decoupled), `remote-unary` and
    `remote-enc` from Triton, and `local`/`local-enc` from the same artifacts."""
    lab = await Lab(tmp_path).start()
    try:
        address = triton.grpc_address
        await register_triton_version(lab, "remote", f"triton://{address}/{STREAM}")
        await register_triton_version(lab, "remote-unary", f"triton://{address}/{UNARY}/1")
        await register_triton_version(lab, "remote-enc", f"triton://{address}/{ENCODER}", EMBEDDING)
        await deploy_lm(lab, model_dirs, "local")
        await deploy_encoder(lab, model_dirs, "local-enc")
        for name in ("remote", "remote-unary", "remote-enc"):
            await lab.wait_state(name, 1, VersionState.READY)
        yield lab
    finally:
        await lab.stop()


async def test_service_generate_through_triton_matches_local(triton_lab):
    lab = triton_lab
    listed = await lab.stub.ListLoadedModels(inference_pb2.ListLoadedModelsRequest())
    backends = {m.model_name: m.backend for m in listed.models}
    assert backends["remote"] == backends["remote-unary"] == backends["remote-enc"] == "triton"
    assert backends["local"] == "transformers"
    for prompt in PROMPTS:
        local = await lab.stub.Generate(
            generate_request("local", prompt, max_new_tokens=24, skip_cache=True)
        )
        for model in ("remote", "remote-unary"):
            remote = await lab.stub.Generate(
                generate_request(model, prompt, max_new_tokens=24, skip_cache=True)
            )
            assert (remote.model_name, remote.model_version) == (model, 1)
            assert (remote.text, remote.finish_reason) == (local.text, local.finish_reason)
            assert remote.usage == local.usage


async def test_service_stream_through_triton_matches_local(triton_lab):
    lab = triton_lab
    for prompt in PROMPTS:
        local_text, local = await stream_text(lab, "local", prompt, max_new_tokens=24)
        for model in ("remote", "remote-unary"):
            text, messages = await stream_text(lab, model, prompt, max_new_tokens=24)
            assert text == local_text
            assert messages[0].model_name == model
            assert [m.index for m in messages] == list(range(len(messages)))
            assert messages[-1].usage == local[-1].usage
            assert messages[-1].finish_reason == local[-1].finish_reason


async def test_service_embed_through_triton_matches_local(triton_lab):
    request = inference_pb2.EmbedRequest(
        model="remote-enc", inputs=["hello world", "sea shells"], normalize=True, skip_cache=True
    )
    remote = await triton_lab.stub.Embed(request)
    request.model = "local-enc"
    local = await triton_lab.stub.Embed(request)
    assert remote.usage == local.usage
    for got, want in zip(remote.embeddings, local.embeddings, strict=True):
        assert list(got.values) == pytest.approx(list(want.values), abs=1e-5)


async def test_service_stream_cancel_stops_triton_model(triton, triton_lab):
    before = triton_counter(triton, "lattice_triton_cancelled_generations_total", STREAM)
    request = inference_pb2.GenerateStreamRequest(
        model="remote",
        prompt=PROMPTS[0],
        parameters=inference_pb2.GenerationParameters(max_new_tokens=400),
        skip_cache=True,
    )
    call = triton_lab.stub.GenerateStream(request)
    for _ in range(3):
        await call.read()
    call.cancel()
    deadline = time.monotonic() + 10
    while triton_counter(triton, "lattice_triton_cancelled_generations_total", STREAM) == before:
        assert time.monotonic() < deadline, "Triton kept generating after the client cancelled"
        await asyncio.sleep(0.02)


async def test_service_bad_parameters_through_triton_are_invalid_argument(triton_lab):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await triton_lab.stub.Generate(generate_request("remote", "x" * 3000, max_new_tokens=4))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in error.value.details()


async def test_a_triton_version_renders_chats_with_its_artifacts_template(triton, tmp_path):
    """The exported repository carries the model's tokenizer, so its chat template
    is rendered here, before Triton (which takes a PROMPT text); a version with
    no artifact gets the default template."""
    repository = tmp_path / "repository"
    shutil.copytree(triton.model_repository / STREAM, repository / STREAM)
    tokenizer_dir = next(repository.rglob("tokenizer_config.json")).parent
    (tokenizer_dir / "chat_template.jinja").write_text(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    uri = f"triton://{triton.grpc_address}/{STREAM}"
    turns = (ChatTurn("developer", "Be brief."), ChatTurn("user", "Count the stars."))
    with_artifact = await loaded(
        TritonBackend(spec(STREAM, Task.GENERATE, uri, model_dir=repository))
    )
    bare = await loaded(triton_backend(triton, STREAM))
    try:
        rendered = with_artifact.render_chat(turns)
        assert rendered == "<|system|>Be brief.<|user|>Count the stars.<|assistant|>"
        assert bare.render_chat(turns) == render_default(turns)
        result = await with_artifact.generate(rendered, GenerationParams(max_new_tokens=4))
        assert result.prompt_tokens == with_artifact.count_tokens(rendered)
    finally:
        await with_artifact.unload()
        await bare.unload()


async def test_exported_repository_registered_as_artifact_is_served(triton, triton_lab):
    """Export -> upload the repository to the registry -> TRITON version with a
    Triton address param: served by Triton, its tokenizer enforces prompt limits."""
    lab = triton_lab
    uri, digest = await lab.upload(pack_directory(triton.model_repository / STREAM))
    await lab.create_model("packaged")
    await lab.reg.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name="packaged",
            artifact_uri=uri,
            artifact_digest=digest,
            format=common_pb2.ARTIFACT_FORMAT_TRITON,
            params={"triton_address": triton.grpc_address},
        )
    )
    await lab.deploy("packaged", {1: 100})
    await lab.wait_state("packaged", 1, VersionState.READY)
    assert lab.backend("packaged", 1).target.model == STREAM  # named by the artifact
    request = generate_request("packaged", PROMPTS[0], max_new_tokens=12, skip_cache=True)
    local = await lab.stub.Generate(
        generate_request("local", PROMPTS[0], max_new_tokens=12, skip_cache=True)
    )
    served = await lab.stub.Generate(request)
    assert (served.text, served.usage) == (local.text, local.usage)

    await lab.set_policy("packaged", max_prompt_tokens=3)
    await lab.wait_policy("packaged", max_prompt_tokens=3)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await lab.stub.Generate(request)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_prompt_tokens=3" in error.value.details()
