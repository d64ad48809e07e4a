"""The decode loop in its own process (services.inference.decode_process), the
service's default: the same tokens as the loop in a thread; a decode process
that dies takes no server down (its requests end UNAVAILABLE and the version
is reloaded), and one whose serving process dies exits with it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import grpc
import psutil
import pytest

from lattice.errors import FailedPrecondition
from lattice.v1 import inference_pb2
from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.decode_process import DecodeProcess
from services.inference.serving import VersionState
from services.inference.transformers_backend import TransformersBackend
from services.suite.embedded import Lab, deploy_lm, generate_request, poll

PROMPTS = [f"Request {i}: " + "once upon a time " * (1 + i % 3) for i in range(6)]
PARAMS = [
    GenerationParams(max_new_tokens=24),
    GenerationParams(max_new_tokens=40, temperature=0.8, seed=7),
    GenerationParams(max_new_tokens=16, temperature=1.1, top_k=20, seed=3),
    GenerationParams(max_new_tokens=32, temperature=0.9, top_p=0.9, seed=11),
    GenerationParams(max_new_tokens=30, stop=("the",)),
    GenerationParams(max_new_tokens=8),
]


async def _outputs(backend: TransformersBackend) -> list[tuple[str, str]]:
    """Unary and streamed text of every request, all at once."""

    async def streamed(prompt: str, params: GenerationParams) -> str:
        return "".join([chunk.delta async for chunk in backend.stream(prompt, params)])

    unary = asyncio.gather(*[backend.generate(p, q) for p, q in zip(PROMPTS, PARAMS, strict=True)])
    streams = asyncio.gather(*[streamed(p, q) for p, q in zip(PROMPTS, PARAMS, strict=True)])
    results, texts = await asyncio.gather(unary, streams)
    return [(r.text, t) for r, t in zip(results, texts, strict=True)]


async def test_a_decode_process_gives_the_same_tokens_as_the_loop_in_a_thread(model_dirs):
    outputs = []
    for in_process in (False, True):
        backend = TransformersBackend(
            LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"]),
            decode_process=in_process,
        )
        await backend.load()
        try:
            assert isinstance(backend.scheduler, DecodeProcess) is in_process
            outputs.append(await _outputs(backend))
            assert backend.tokens_generated > 0
        finally:
            await backend.unload()
    thread, process = outputs
    assert process == thread
    assert all(unary == streamed for unary, streamed in process)


@pytest.fixture
async def lab(tmp_path):
    lab = await Lab(tmp_path).start()
    yield lab
    await lab.stop()


async def test_a_killed_decode_process_fails_its_streams_and_the_version_comes_back(
    lab, model_dirs
):
    await deploy_lm(lab, model_dirs)
    process = lab.backend("lm", 1).scheduler
    assert isinstance(process, DecodeProcess) and process.pid is not None
    stream = lab.stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="lm",
            prompt="once upon a time",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=2000),
            skip_cache=True,
        )
    )
    await stream.read()
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        while await stream.read() is not grpc.aio.EOF:
            pass
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "decode process stopped; retry" in (raised.value.details() or "")

    # The manager notices within a second, unloads the remains and reloads.
    await poll(lambda: lab.entry("lm", 1).state is not VersionState.READY, 5.0)
    await poll(
        lambda: (
            lab.entry("lm", 1).state is VersionState.READY
            and lab.backend("lm", 1) is not None
            and lab.backend("lm", 1).scheduler is not process
        ),
        30.0,
    )
    reloaded = lab.backend("lm", 1).scheduler
    assert isinstance(reloaded, DecodeProcess) and reloaded.pid != process.pid
    answer = await lab.stub.Generate(generate_request("lm", max_new_tokens=4, skip_cache=True))
    assert answer.text


async def test_weights_that_fail_to_load_in_the_decode_process_say_why_without_paths(
    model_dirs, tmp_path
):
    broken = tmp_path / "broken"
    shutil.copytree(model_dirs["lm1"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=broken), decode_process=True
    )
    with pytest.raises(FailedPrecondition) as raised:
        await backend.load()
    await backend.unload()
    reason = raised.value.message
    assert reason.startswith("the artifact's files could not be read") or reason.startswith(
        "the model could not be built"
    ), reason
    assert str(tmp_path) not in reason and "Error" not in reason.split(":")[0], reason


def test_a_decode_process_exits_when_its_serving_process_is_killed(model_dirs):
    host = subprocess.Popen(
        [sys.executable, "-m", "tests.support.decode_host", str(model_dirs["lm1"])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        decode = psutil.Process(int(host.stdout.readline()))
        assert decode.is_running()
    finally:
        host.kill()
        host.wait()
    # Its pipe closed: it exits on its own (no orphan holding the model's memory).
    decode.wait(timeout=10)
