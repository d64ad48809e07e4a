"""TTFT of a burst of 32 GenerateStream calls that arrive at once, through the
inference service, against the request path's own floor; and the gateway's
stream fan-in (the same cached burst through the gateway vs direct).

The floor is the same burst replayed from the response cache (the in-process
tier in front of a real Redis): every layer of the request path (gRPC,
validation, routing, policy, cache, streaming) but no model. Measured: a
burst of 32 distinct, never-seen prompts (64 new tokens each, greedy), which
the scheduler serves as one continuous batch. Each round uses fresh prompts,
then replays them; figures are the median over rounds of each burst's
p50/p99 time to the first message with text. Model: bench/streaming.py's
starter-size GPT-2.

Fan-in: each round also replays the cached burst through a gateway (dev JWT,
production defaults otherwise) in front of the same inference server. All
servers and the client share this process and its event loop, so the
gateway's own work per message shows up in full.

    .venv/bin/python bench/stream_burst_ttft.py [--streams 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from grpc import aio
from inference_setup import as_run_service
from streaming import build_model

from lattice.tokens import TENANT_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.gateway.server import GatewaySettings
from services.gateway.server import build_server as build_gateway
from services.suite.embedded import Lab, deploy_lm
from services.suite.redis import RedisProcess

SECRET = "bench-secret-0123456789abcdef-0123456789"


async def first_message(stub, prompt: str, metadata=()) -> float:
    request = inference_pb2.GenerateStreamRequest(
        model="lm",
        prompt=prompt,
        parameters=inference_pb2.GenerationParameters(max_new_tokens=64),
    )
    start = time.perf_counter()
    call = stub.GenerateStream(request, metadata=metadata)
    first = None
    async for message in call:
        if first is None and message.delta:
            first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("no text")
    return first


async def burst(stub, prompts: list[str], metadata=()) -> tuple[float, float]:
    """(p50, p99) of the burst's times to first text."""
    times = sorted(await asyncio.gather(*(first_message(stub, p, metadata) for p in prompts)))
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


async def main(streams: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(as_run_service(root / "inference.log"))
        redis = RedisProcess(root / "redis").start()
        lab = await Lab(root / "lab", redis_url=redis.url).start()
        assert lab.registry is not None and lab.inference is not None
        gateway = await build_gateway(
            GatewaySettings(
                port=0,
                data_dir=root / "lab",
                log_json=False,
                registry_address=lab.registry.address,
                inference_addresses=(lab.inference.address,),
                dev_jwt_secret=SECRET,
            )
        )
        await gateway.start()
        channel = aio.insecure_channel(gateway.address)
        via_gateway = inference_pb2_grpc.InferenceServiceStub(channel)
        token = mint_dev_token(SECRET, tenant="acme", scopes=TENANT_SCOPES, subject="bench")
        bearer = (("authorization", f"Bearer {token}"),)
        try:
            await deploy_lm(lab, {"lm1": build_model(root / "model")})
            warm = [f"def warm_up_{i}():\n" for i in range(streams)]
            await burst(lab.stub, warm)
            await burst(via_gateway, warm, bearer)
            fresh, replay, gated = [], [], []
            for r in range(rounds):
                prompts = [f"def handler_{r}_{i}(request, context):\n    " for i in range(streams)]
                fresh.append(await burst(lab.stub, prompts))
                replay.append(await burst(lab.stub, prompts))  # every answer is cached now
                gated.append(await burst(via_gateway, prompts, bearer))
        finally:
            await channel.close()
            await gateway.stop(0)
            await lab.stop()
            redis.stop()
    f50 = statistics.median(p50 for p50, _ in fresh)
    f99 = statistics.median(p99 for _, p99 in fresh)
    c50 = statistics.median(p50 for p50, _ in replay)
    c99 = statistics.median(p99 for _, p99 in replay)
    g50 = statistics.median(p50 for p50, _ in gated)
    g99 = statistics.median(p99 for _, p99 in gated)
    print(f"{streams} simultaneous GenerateStream calls, median of {rounds} rounds")
    for label, p50, p99 in (
        ("fresh prompts (continuous batch)", f50, f99),
        ("replayed from the cache (floor) ", c50, c99),
        ("replayed, through the gateway   ", g50, g99),
    ):
        print(f"  {label}: TTFT p50 {p50 * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms")
    print(f"  fresh p99 over the floor's p99: {f99 / c99:.2f}x (goal <= 2)")
    print(f"  gateway fan-in, cached p99 via gateway over direct: {g99 / c99:.2f}x (goal <= 1.3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.rounds))
