"""Continuous batching (services.inference.scheduler) on a real inference
server and real tiny models: equality with running alone, joining a running
batch, cancellation, admission limits, deadlines and tenant fairness."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lattice.errors import ResourceExhausted, from_rpc_error
from lattice.v1 import inference_pb2
from services.inference.backends import (
    GenerationParams,
    LoadSpec,
    Task,
    request_tenant,
)
from services.inference.scheduler import default_limits
from services.inference.transformers_backend import TransformersBackend
from services.suite.embedded import Lab, deploy_lm, generate_request, poll

DECODE = {"gen_ai_request_model": "lm", "version": "1", "phase": "decode"}
VERSION = {"gen_ai_request_model": "lm", "version": "1"}


def _params(i: int) -> dict:
    """32 different requests: lengths 8..70, greedy and seeded sampling, stops."""
    params: dict = {"max_new_tokens": 8 + (i * 7) % 63}
    if i % 2:
        params.update(temperature=0.7 + (i % 5) / 10, seed=i)
        if i % 3 == 0:
            params["top_k"] = 20
        if i % 5 == 0:
            params["top_p"] = 0.9
    if i % 8 == 4:
        params["stop"] = ["the"]
    return params


def _stream_request(i: int, **overrides) -> inference_pb2.GenerateStreamRequest:
    params = {**_params(i), **overrides}
    return inference_pb2.GenerateStreamRequest(
        model="lm",
        prompt=f"Request {i}: " + "once upon a time " * (1 + i % 4),
        parameters=inference_pb2.GenerationParameters(**params),
        skip_cache=True,
    )


async def _collect(call) -> tuple[str, int]:
    text, finish = [], 0
    while (message := await call.read()) is not grpc.aio.EOF:
        text.append(message.delta)
        finish = message.finish_reason or finish
    return "".join(text), finish


async def _alone(lab: Lab, request: inference_pb2.GenerateStreamRequest) -> tuple[str, int]:
    response = await lab.stub.Generate(
        inference_pb2.GenerateRequest(
            model=request.model,
            prompt=request.prompt,
            parameters=request.parameters,
            skip_cache=True,
        )
    )
    return response.text, response.finish_reason


async def test_32_concurrent_streams_each_match_the_same_request_alone(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    requests = [_stream_request(i) for i in range(32)]
    together = await asyncio.gather(*(_collect(lab.stub.GenerateStream(r)) for r in requests))
    rows = lab.metric("lattice_inference_step_batch_size_sum", DECODE)
    steps = lab.metric("lattice_inference_step_batch_size_count", DECODE)
    assert rows / steps > 8  # they really shared forward passes
    for request, got in zip(requests, together, strict=True):
        assert got == await _alone(lab, request), request.prompt
    assert lab.backend("lm", 1).scheduler.kv_tokens == 0


async def test_a_request_joining_a_running_batch_gets_its_first_token_within_3_steps(
    lab, model_dirs
):
    await deploy_lm(lab, model_dirs)
    scheduler = lab.backend("lm", 1).scheduler
    running = [
        asyncio.create_task(
            _collect(lab.stub.GenerateStream(_stream_request(i, max_new_tokens=300)))
        )
        for i in range(8)
    ]
    await poll(lambda: scheduler.tokens_generated >= 8 * 20, 30.0)
    late = lab.stub.GenerateStream(_stream_request(40, max_new_tokens=4, temperature=0.0))
    async for message in late:
        if message.delta:
            break
    assert not all(task.done() for task in running)  # not after the batch finished
    # Every request, the late one included, had its first token within 3
    # forward passes of its submission (counted by the scheduler itself).
    count = lab.metric("lattice_inference_first_token_steps_count", VERSION)
    assert count >= 10  # warm-up, 8 running, the late one
    assert (
        lab.metric("lattice_inference_first_token_steps_bucket", {**VERSION, "le": "3.0"}) == count
    )
    late.cancel()
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


async def test_cancelling_10_of_32_streams_stops_them_within_2_steps_and_spares_the_rest(
    lab, model_dirs
):
    await deploy_lm(lab, model_dirs)
    scheduler = lab.backend("lm", 1).scheduler
    # The ten to cancel are long, so that they are still running when cancelled.
    requests = [
        _stream_request(i, max_new_tokens=400 if i < 10 else 64, temperature=0.0) for i in range(32)
    ]
    calls = [lab.stub.GenerateStream(r) for r in requests]
    firsts = [await call.read() for call in calls]  # every stream is running
    assert all(m.index == 0 for m in firsts)
    for call in calls[:10]:
        call.cancel()
    rest = await asyncio.gather(*(_collect(call) for call in calls[10:]))
    await poll(lambda: scheduler.active == 0, 10.0)
    cancelled = lab.metric("lattice_inference_cancel_steps_count", VERSION)
    # (a random model may end one of them with EOS before the cancel arrives)
    assert cancelled >= 8
    assert (
        lab.metric("lattice_inference_cancel_steps_bucket", {**VERSION, "le": "2.0"}) == cancelled
    )
    assert scheduler.kv_tokens == 0  # KV memory back to its baseline
    for request, first, (text, finish) in zip(requests[10:], firsts[10:], rest, strict=True):
        alone_text, alone_finish = await _alone(lab, request)
        assert (first.delta + text, finish) == (alone_text, alone_finish)


@pytest.fixture
async def narrow_lab(tmp_path):
    """One running sequence at a time, two more may wait."""
    lab = await Lab(tmp_path, max_running_sequences=1, max_queued_sequences=2).start()
    yield lab
    await lab.stop()


async def test_beyond_the_queue_limit_requests_are_refused_with_a_retry_hint(
    narrow_lab, model_dirs
):
    lab = narrow_lab
    await deploy_lm(lab, model_dirs)
    scheduler = lab.backend("lm", 1).scheduler
    # The running one starts first: calls made together reach the server in any
    # order, and two queued streams could otherwise finish before it starts.
    long = [lab.stub.GenerateStream(_stream_request(0, max_new_tokens=400))]
    await long[0].read()
    long += [lab.stub.GenerateStream(_stream_request(i, max_new_tokens=400)) for i in (1, 2)]
    await poll(lambda: scheduler.active == 3, 5.0)  # one running, two queued
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lab.stub.Generate(generate_request("lm", max_new_tokens=4, skip_cache=True))
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    error = from_rpc_error(raised.value)
    assert isinstance(error, ResourceExhausted) and error.retry_after > 0
    for call in long:
        call.cancel()
    await poll(lambda: scheduler.active == 0, 5.0)
    # The server stays up and serves again.
    assert (await lab.stub.Generate(generate_request("lm", max_new_tokens=4))).text


async def test_a_cancelled_queued_request_frees_its_place_at_once(model_dirs):
    """Not at the loop's next iteration: a decode process reads a cancel and the
    next submit back to back, and refused that submit (seen in a full run)."""
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"]),
        scheduling={"max_running": 1, "max_queued": 2},
    )
    await backend.load()
    params = GenerationParams(max_new_tokens=400)
    running = backend.stream("the long one", params)
    try:
        await anext(running)  # admitted: the two below wait behind it
        queued = [asyncio.create_task(anext(backend.stream(f"q{i}", params))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted):
            await backend.generate("one too many", GenerationParams(max_new_tokens=2))
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        # Both places are free at once, while the loop is still mid-step.
        short = GenerationParams(max_new_tokens=2)
        later = [asyncio.create_task(backend.generate(f"q{i}", short)) for i in (3, 4)]
        await asyncio.sleep(0)  # submitted (or refused) now
        await running.aclose()
        assert all(r.completion_tokens == 2 for r in await asyncio.gather(*later))
    finally:
        await running.aclose()
        await backend.unload()


async def test_a_deadline_that_passes_in_the_queue_costs_no_compute(narrow_lab, model_dirs):
    lab = narrow_lab
    await deploy_lm(lab, model_dirs)
    scheduler = lab.backend("lm", 1).scheduler
    admitted = lab.metric("lattice_inference_scheduler_queue_seconds_count", VERSION)  # warm-up
    long = lab.stub.GenerateStream(_stream_request(1, max_new_tokens=400))
    await long.read()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lab.stub.Generate(
            generate_request("lm", max_new_tokens=4, skip_cache=True), timeout=0.3
        )
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await poll(lambda: scheduler.active == 1, 5.0)  # it left the queue
    long.cancel()
    await poll(lambda: scheduler.active == 0, 5.0)
    # Only the long stream was ever admitted (prefilled).
    assert lab.metric("lattice_inference_scheduler_queue_seconds_count", VERSION) == admitted + 1


async def test_one_tenants_backlog_does_not_starve_another_tenant(model_dirs):
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"]),
        scheduling={"max_running": 1},
    )
    await backend.load()
    finished: list[str] = []

    async def ask(tenant: str, i: int) -> None:
        request_tenant.set(tenant)
        await backend.generate(f"{tenant} asks {i}", GenerationParams(max_new_tokens=20))
        finished.append(f"{tenant}{i}")

    try:
        # Tasks start in the order they were created, and each submits before its
        # first await: all of a's requests are submitted before b's, in one turn
        # of the event loop, without a poll that could miss a backlog already
        # draining (on a loaded CI, it did).
        busy = [asyncio.create_task(ask("a", i)) for i in range(8)]
        await asyncio.gather(*busy, ask("b", 0))
    finally:
        await backend.unload()
    # b waited for at most one of a's queued requests, not for all seven.
    assert finished.index("b0") <= 2, finished


async def test_forward_passes_are_root_spans_linked_to_the_requests_they_served(model_dirs):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"]), tracer=tracer
    )
    await backend.load()

    async def request(i: int) -> int:
        with tracer.start_as_current_span(f"request-{i}") as span:
            await backend.generate(f"Story {i}", GenerationParams(max_new_tokens=6))
            return span.get_span_context().span_id

    try:
        ids = set(await asyncio.gather(*(request(i) for i in range(4))))
    finally:
        await backend.unload()
    spans = exporter.get_finished_spans()
    steps = [s for s in spans if s.name in ("inference.prefill", "inference.decode")]
    assert steps and all(s.parent is None for s in steps)  # never inside one request's trace
    linked = {link.context.span_id for s in steps for link in s.links}
    assert linked == ids
    assert max(len(s.links) for s in steps) > 1  # one pass served several requests
    for span in spans:
        if span.name.startswith("request-"):
            names = [e.name for e in span.events]
            assert names[:1] == ["scheduler.admitted"] and "scheduler.finished" in names


def test_default_limits_follow_the_model_and_the_host():
    cpu = default_limits(context_length=512, device="cpu")
    assert (cpu.max_running, cpu.max_kv_tokens, cpu.max_queued) == (32, 32 * 512, 1024)
    assert default_limits(context_length=512, device="cuda:0").max_running == 256
    # Little free memory: the KV budget shrinks to a quarter of it (one context at least).
    tight = default_limits(
        context_length=512, device="cpu", kv_bytes_per_token=1024, free_memory=8 << 20
    )
    assert tight.max_kv_tokens == 2048
    assert default_limits(context_length=512, device="cpu", max_running=4).max_queued == 128
    # Prefill per step: a bounded chunk, never more than the context.
    assert cpu.max_prefill_tokens == 512
    assert default_limits(context_length=4096, device="cuda:0").max_prefill_tokens == 2048
    assert default_limits(context_length=128, device="cuda:0").max_prefill_tokens == 128


class _CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads ask of it."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, callback, *args, context=None):
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_a_decode_step_wakes_the_event_loop_once_not_once_per_stream(model_dirs):
    """16 streams of 96 tokens: one cross-thread wake-up per step, where one
    per stream and step cost 8.7% of the inference process's samples at 32
    streams (bench/transformers_serve.py). 96 tokens, so that generation
    outlasts a few of the interpreter's 5 ms thread switches: with 24, a busy
    host sometimes let a reader take a whole answer in one message."""
    loop = _CountingLoop()

    async def run() -> tuple[int, int, list[list[str]]]:
        spec = LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"])
        backend = TransformersBackend(spec)
        await backend.load()
        assert backend.scheduler is not None
        params = GenerationParams(max_new_tokens=96)

        async def stream(i: int) -> list[str]:
            return [c.delta async for c in backend.stream(f"Request {i}: once upon a", params)]

        try:
            await stream(99)
            steps, calls = backend.scheduler.steps, loop.threadsafe_calls
            texts = await asyncio.gather(*(stream(i) for i in range(16)))
            return backend.scheduler.steps - steps, loop.threadsafe_calls - calls, texts
        finally:
            await backend.unload()

    try:
        steps, calls, texts = loop.run_until_complete(run())
    finally:
        loop.close()
    # Every stream got its text in more than one message (how many depends on how
    # fast the readers keep up: a slow one gets several tokens per message).
    assert all(len(t) >= 2 for t in texts)
    assert 96 <= steps <= 112  # a step per token, shared by the streams
    assert calls <= steps + 16  # before: one per stream and token
