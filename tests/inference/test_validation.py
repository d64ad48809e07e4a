"""Bad input gets INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION naming
the problem, never INTERNAL or UNKNOWN."""

from __future__ import annotations

import grpc
import pytest

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.inference.serving import VersionState
from services.suite.embedded import deploy_encoder, deploy_lm, generate_request
from services.suite.ports import free_port
from tests.support.identity import signed_channel

INVALID = grpc.StatusCode.INVALID_ARGUMENT

GENERATE_CASES = [
    ("empty prompt", generate_request("lm", prompt=""), INVALID, "prompt"),
    ("blank prompt", generate_request("lm", prompt="   \n"), INVALID, "prompt"),
    (
        "huge max_new_tokens",
        generate_request("lm", max_new_tokens=10**6),
        INVALID,
        "max_new_tokens",
    ),
    ("temperature > 2", generate_request("lm", temperature=2.5), INVALID, "temperature"),
    ("temperature < 0", generate_request("lm", temperature=-0.1), INVALID, "temperature"),
    ("temperature NaN", generate_request("lm", temperature=float("nan")), INVALID, "temperature"),
    ("top_p = 0", generate_request("lm", top_p=0.0), INVALID, "top_p"),
    ("top_p > 1", generate_request("lm", top_p=1.5), INVALID, "top_p"),
    ("9 stop sequences", generate_request("lm", stop=["a"] * 9), INVALID, "stop"),
    ("empty stop sequence", generate_request("lm", stop=[""]), INVALID, "stop[0]"),
    ("long stop sequence", generate_request("lm", stop=["x" * 65]), INVALID, "stop[0]"),
    ("no model", generate_request(""), INVALID, "model"),
    ("bad model name", generate_request("Not A Name"), INVALID, "model"),
    ("bad version", generate_request("lm:zero"), INVALID, "model"),
    ("routing key too long", generate_request("lm", routing_key="k" * 300), INVALID, "routing"),
    ("unknown model", generate_request("nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    ("unknown version", generate_request("lm:9"), grpc.StatusCode.NOT_FOUND, "version 9"),
    ("unknown alias", generate_request("lm@gold"), grpc.StatusCode.NOT_FOUND, "gold"),
    (
        "registered, not online",
        generate_request("lm:2"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not online",
    ),
    (
        "generate on an encoder",
        generate_request("enc"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "embedding",
    ),
    (
        "prompt beyond the context",
        generate_request("lm", prompt="word " * 600),
        INVALID,
        "prompt",
    ),
]


@pytest.fixture
async def served(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    await lab.register("lm", model_dirs["lm2"])  # version 2, never deployed
    await deploy_encoder(lab, model_dirs)
    return lab


async def test_bad_generate_requests(served):
    for label, request, code, mention in GENERATE_CASES:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await served.stub.Generate(request)
        assert error.value.code() == code, label
        assert mention in error.value.details(), (label, error.value.details())
        stream_request = inference_pb2.GenerateStreamRequest(
            model=request.model,
            prompt=request.prompt,
            parameters=request.parameters,
            routing_key=request.routing_key,
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in served.stub.GenerateStream(stream_request):
                pass
        assert error.value.code() == code, f"stream: {label}"


async def test_bad_embed_requests(served):
    cases = [
        ("no inputs", inference_pb2.EmbedRequest(model="enc"), INVALID, "inputs"),
        (
            "too many inputs",
            inference_pb2.EmbedRequest(model="enc", inputs=["a"] * 33),
            INVALID,
            "inputs",
        ),
        (
            "empty input",
            inference_pb2.EmbedRequest(model="enc", inputs=["a", ""]),
            INVALID,
            "inputs[1]",
        ),
        (
            "embed on a generator",
            inference_pb2.EmbedRequest(model="lm", inputs=["a"]),
            grpc.StatusCode.FAILED_PRECONDITION,
            "text generation",
        ),
        (
            "unknown model",
            inference_pb2.EmbedRequest(model="nope", inputs=["a"]),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
    ]
    for label, request, code, mention in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await served.stub.Embed(request)
        assert error.value.code() == code, label
        assert mention in error.value.details(), (label, error.value.details())


async def test_policy_limits_name_the_limit(served):
    lab = served
    await lab.set_policy("lm", max_new_tokens=8, max_prompt_tokens=4)
    await lab.wait_policy("lm", max_new_tokens=8, max_prompt_tokens=4)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await lab.stub.Generate(generate_request("lm", prompt="Hi", max_new_tokens=9))
    assert error.value.code() == INVALID
    assert "max_new_tokens=8" in error.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await lab.stub.Generate(
            generate_request("lm", prompt="the quick brown fox jumps", max_new_tokens=2)
        )
    assert error.value.code() == INVALID
    assert "max_prompt_tokens=4" in error.value.details()
    # Within the limits it works; an unset max_new_tokens takes the ceiling.
    response = await lab.stub.Generate(generate_request("lm", prompt="Hi"))
    assert response.usage.completion_tokens <= 8


async def test_an_offline_model_is_a_failed_precondition(served):
    lab = served
    await lab.deploy("lm", {})
    await lab.wait_unloaded("lm", 1)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await lab.stub.Generate(generate_request("lm"))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "offline" in error.value.details()
    assert lab.entry("enc", 1).state is VersionState.READY


async def test_before_the_registry_is_reachable_requests_are_unavailable(tmp_path):
    server = await build_inference(
        InferenceSettings(
            port=0,
            data_dir=tmp_path,
            log_json=False,
            registry_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        )
    )
    await server.start()
    try:
        async with signed_channel(server.address, tmp_path, "inference") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Generate(generate_request("lm"))
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "registry" in error.value.details()
    finally:
        await server.stop(0)
