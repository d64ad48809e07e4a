"""TTFT of a burst of 32 GenerateStream calls that arrive at once, against the
request path's own floor and the model's compute floor; and the gateway's
stream fan-in (the same cached burst through the gateway vs direct).

Topology (default): as deployed. `LocalSuite` (what `lattice up` runs)
starts Redis, registry, inference, trainer and gateway, each its own process
(`python -m services.<name>`, production defaults, logs to files); the
client runs in this process and calls inference directly (a signed internal
token minted once) or through the gateway (a dev JWT). A bare grpc.aio
forwarder of GenerateStream (no logic at all) runs as one more process, in
front of the same inference: the floor of any Python gRPC hop. The host has
2 cores for all of them. `--one-process` runs the older shape instead:
registry, inference, gateway, forwarder and client on one event loop.

Per round, with fresh prompts (32 distinct, never-seen, 64 new tokens each,
greedy, starter-size GPT-2 of bench/streaming.py):
1. the fresh burst, direct: the scheduler serves it as one continuous batch;
2. the same burst replayed from the response cache, direct (the floor: every
   layer of the request path but no model);
3. the replay through the gateway (fan-in), then through the bare forwarder.
Figures are medians over rounds of each burst's p50/p99 time to the first
message with text.

The compute floor, measured in this process in the same run on the same
model with one torch thread (what the inference process uses on this host),
after the servers stopped: one batched forward over the burst's 32
left-padded prompts, plus the first decode step over 32 rows (each the best
of 10: the host is shared, the minimum is the cost); and the scheduler's
prefill budget per step. The fresh burst's p99 is reported against the cache
floor and against cache floor + compute floor. From the inference process's
own metrics (scraped before and after each fresh burst): the burst's prefill
steps, rows and time, its decode steps, each sequence's mean wait in the
scheduler's queue and forward passes from submission to first token.

CPU per cached stream of each process (client, gateway, forwarder,
inference) over the replay bursts, and the host's load average, are printed.

What it showed (README, performance table): the fan-in is bounded by the
hop, not the gateway's logic: the bare forwarder spends ~0.8 ms of CPU per
cached stream (a server call plus a client call in grpc.aio), more than
inference's whole cached path (~0.5 ms), and its p99 ratio is 1.6-2.6x on
its own; the gateway adds 0-0.4 ms per stream on top. Tried on the
forwarder, without effect: grpc.optimization_target, and 4 channels
(connections) to inference instead of 1. With the decode loop as a thread of
the inference process (LATTICE_INFERENCE_DECODE_PROCESS=false) the fresh
burst's prefill is GIL-bound on this tiny model: the decode thread's forward
passes share the interpreter with the event loop that is admitting the same
burst, so they take 2-4x the bare model's time (fresh p99 2.3-3.9x the cache
floor). In a decode process of its own (the default) the burst's decode
steps run 1.9x faster and the fresh p99 is 2.05-2.26x the floor, 1.40-1.47x
floor + compute. The burst's prompts (530 tokens) exceed one step's prefill
budget (512), so it needs 2 prefill steps even when all have arrived.
Prefilling arrivals before the next decode step was tried, in both shapes:
fewer forward passes to the first token, the same p99.

    .venv/bin/python bench/stream_burst_ttft.py [--streams 32] [--rounds 5]
        [--one-process]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import torch
from grpc import aio
from http_overhead import deploy
from inference_setup import as_run_service, signed_metadata
from prometheus_client.parser import text_string_to_metric_families
from streaming import build_model
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lattice.tokens import TENANT_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.gateway.server import GatewaySettings
from services.gateway.server import build_server as build_gateway
from services.inference.scheduler import default_limits
from services.suite.embedded import Lab, deploy_lm
from services.suite.local import LocalSuite, SuiteConfig, dev_secret, free_ports
from services.suite.redis import RedisProcess

SECRET = "bench-secret-0123456789abcdef-0123456789"
MODEL = "lm"
TENANT = "acme"  # the embedded lab's operator tenant: signed direct calls act for it

Metadata = tuple[tuple[str, str], ...]


async def first_message(stub, prompt: str, metadata: Metadata) -> float:
    request = inference_pb2.GenerateStreamRequest(
        model=MODEL,
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


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def burst(stub, prompts: list[str], metadata: Metadata) -> tuple[float, float]:
    """(p50, p99) of the burst's times to first text."""
    times = await asyncio.gather(*(first_message(stub, p, metadata) for p in prompts))
    return statistics.median(times), p99(times)


def compute_floor(model_dir: Path, prompts: list[str], tries: int = 10) -> tuple[float, float]:
    """(prefill, first decode step) seconds of the bare model for the burst:
    one forward over the prompts left-padded into one batch, then one decode
    step over all rows; one torch thread, best of `tries`."""
    torch.set_num_threads(1)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    prefill = decode = float("inf")
    with torch.inference_mode():
        for _ in range(tries):
            start = time.perf_counter()
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            middle = time.perf_counter()
            model(
                input_ids=token,
                attention_mask=torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1),
                position_ids=positions[:, -1:] + 1,
                cache=out.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            end = time.perf_counter()
            prefill, decode = min(prefill, middle - start), min(decode, end - middle)
    return prefill, decode


def prompt_tokens(model_dir: Path, prompts: list[str]) -> list[int]:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    return [len(tokenizer(p)["input_ids"]) for p in prompts]


@dataclasses.dataclass
class StepCounts:
    """The inference process's forward passes, from its /metrics."""

    prefill_steps: float = 0.0
    prefill_rows: float = 0.0
    prefill_seconds: float = 0.0
    decode_steps: float = 0.0
    decode_seconds: float = 0.0
    #: Sequences admitted, their summed wait before prefill, and the summed forward
    #: passes between each one's submission and its first token.
    admitted: float = 0.0
    queue_seconds: float = 0.0
    first_token_steps: float = 0.0

    def __sub__(self, other: StepCounts) -> StepCounts:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return StepCounts(*(a - b for a, b in pairs))


def scrape_steps(url: str) -> StepCounts:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    counts = StepCounts()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            phase = sample.labels.get("phase")
            if sample.name == "lattice_inference_step_duration_seconds_count":
                if phase == "prefill":
                    counts.prefill_steps += sample.value
                else:
                    counts.decode_steps += sample.value
            elif sample.name == "lattice_inference_step_duration_seconds_sum":
                if phase == "prefill":
                    counts.prefill_seconds += sample.value
                else:
                    counts.decode_seconds += sample.value
            elif sample.name == "lattice_inference_step_batch_size_sum" and phase == "prefill":
                counts.prefill_rows += sample.value
            elif sample.name == "lattice_inference_scheduler_queue_seconds_count":
                counts.admitted += sample.value
            elif sample.name == "lattice_inference_scheduler_queue_seconds_sum":
                counts.queue_seconds += sample.value
            elif sample.name == "lattice_inference_first_token_steps_sum":
                counts.first_token_steps += sample.value
    return counts


class CpuClock:
    """CPU seconds (user + system) of named processes, summed over measured spans."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.spent = {name: 0.0 for name in processes}

    def _now(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}

    async def measure(self, work: Awaitable[tuple[float, float]]) -> tuple[float, float]:
        before = self._now()
        result = await work
        after = self._now()
        for name in self.spent:
            self.spent[name] += after[name] - before[name]
        return result


@dataclasses.dataclass
class Topology:
    """Where the bursts go and what can be read about the servers."""

    direct: object  # InferenceService stub, direct
    direct_metadata: Metadata
    gateway: object  # InferenceService stub, through the gateway
    gateway_metadata: Metadata
    proxy: object  # InferenceService stub, through a bare grpc.aio forwarder
    processes: dict[str, psutil.Process]
    metrics_url: str


async def start_bare_proxy(upstream: str, port: int = 0) -> tuple[aio.Server, int]:
    """The floor of any Python gRPC hop: a grpc.aio forwarder of GenerateStream
    with no logic at all (the caller's signed token passes through)."""
    channel = aio.insecure_channel(upstream)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    class Forward(inference_pb2_grpc.InferenceServiceServicer):
        async def GenerateStream(self, request, context):
            metadata = [(m.key, m.value) for m in context.invocation_metadata() or ()]
            async for message in stub.GenerateStream(request, metadata=metadata):
                yield message

    server = aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Forward(), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def serve_bare_proxy(port: int, upstream: str) -> None:
    server, _ = await start_bare_proxy(upstream, port)
    await server.wait_for_termination()


def service_process(module: str) -> psutil.Process:
    """The child process running `python -m <module>`."""
    for child in psutil.Process().children(recursive=True):
        if module in child.cmdline():
            return child
    raise RuntimeError(f"no {module} process")


def print_log_tails(log_dir: Path, lines: int = 20) -> None:
    """The end of every service's log (they go away with the temporary directory)."""
    for log in sorted(log_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)


async def run_in_processes(root: Path, model_dir: Path, measure: Callable) -> None:
    host = "127.0.0.1"
    gateway, registry, inference, trainer, redis_port = free_ports(host, 5)
    config = SuiteConfig(
        host=host,
        ports={
            "gateway": gateway,
            "registry": registry,
            "inference": inference,
            "trainer": trainer,
        },
        redis_port=redis_port,
        http_port=-1,
        data_dir=root / "suite",
        grace_seconds=1.0,
    )
    suite = LocalSuite(config, report=lambda line: print(f"suite: {line}", file=sys.stderr))
    proxy = None
    try:
        try:
            await suite.start(timeout=120)
        except TimeoutError:
            print_log_tails(suite.log_dir)
            raise
        proxy_port = free_ports(host, 1)[0]
        proxy = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--serve-bare-proxy", str(proxy_port)),
            config.address("inference"),
        )
        data_dir = suite.config.data_dir
        token = mint_dev_token(dev_secret(data_dir), tenant=TENANT, scopes=TENANT_SCOPES)
        await asyncio.to_thread(deploy, config.address("gateway"), token, model_dir, MODEL)
        async with (
            aio.insecure_channel(config.address("inference")) as direct,
            aio.insecure_channel(config.address("gateway")) as via,
            aio.insecure_channel(f"{host}:{proxy_port}") as bare,
        ):
            await asyncio.wait_for(bare.channel_ready(), 30)
            await measure(
                Topology(
                    direct=inference_pb2_grpc.InferenceServiceStub(direct),
                    direct_metadata=signed_metadata(data_dir),
                    gateway=inference_pb2_grpc.InferenceServiceStub(via),
                    gateway_metadata=(("authorization", f"Bearer {token}"),),
                    proxy=inference_pb2_grpc.InferenceServiceStub(bare),
                    processes={
                        "client": psutil.Process(),
                        "gateway": service_process("services.gateway"),
                        "bare proxy": psutil.Process(proxy.pid),
                        "inference": service_process("services.inference"),
                    },
                    metrics_url=f"http://{host}:{suite.metrics_ports['inference']}/metrics",
                )
            )
    finally:
        if proxy is not None:
            proxy.terminate()
            await proxy.wait()
        await suite.stop()


async def run_in_one_process(root: Path, model_dir: Path, measure: Callable) -> None:
    print(as_run_service(root / "inference.log"))
    redis = RedisProcess(root / "redis").start()
    lab = await Lab(root / "lab", redis_url=redis.url, metrics_port=0).start()
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
    proxy, proxy_port = await start_bare_proxy(lab.inference.address)
    token = mint_dev_token(SECRET, tenant=TENANT, scopes=TENANT_SCOPES, subject="bench")
    try:
        await deploy_lm(lab, {"lm1": model_dir}, name=MODEL)
        async with (
            aio.insecure_channel(lab.inference.address) as direct,
            aio.insecure_channel(gateway.address) as via,
            aio.insecure_channel(f"127.0.0.1:{proxy_port}") as bare,
        ):
            await measure(
                Topology(
                    direct=inference_pb2_grpc.InferenceServiceStub(direct),
                    direct_metadata=signed_metadata(root / "lab"),
                    gateway=inference_pb2_grpc.InferenceServiceStub(via),
                    gateway_metadata=(("authorization", f"Bearer {token}"),),
                    proxy=inference_pb2_grpc.InferenceServiceStub(bare),
                    processes={"all (one process)": psutil.Process()},
                    metrics_url=f"http://127.0.0.1:{lab.inference.metrics_port}/metrics",
                )
            )
    finally:
        await proxy.stop(0)
        await gateway.stop(0)
        await lab.stop()
        redis.stop()


def median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p for p, _ in pairs), statistics.median(q for _, q in pairs)


async def main(streams: int, rounds: int, one_process: bool) -> None:
    def prompts_of(r: int) -> list[str]:
        return [f"def handler_{r}_{i}(request, context):\n    " for i in range(streams)]

    results: dict[str, list[tuple[float, float]]] = {
        "fresh": [],
        "replay": [],
        "gateway": [],
        "proxy": [],
    }
    bursts: list[StepCounts] = []
    loads: list[tuple[float, float, float]] = []
    cpu: dict[str, float] = {}

    async def measure(topology: Topology) -> None:
        direct, via, bare = topology.direct, topology.gateway, topology.proxy
        signed, bearer = topology.direct_metadata, topology.gateway_metadata
        warm = [f"def warm_up_{i}():\n" for i in range(streams)]
        await burst(direct, warm, signed)
        await burst(via, warm, bearer)
        await burst(bare, warm, signed)
        clocks = {path: CpuClock(topology.processes) for path in ("direct", "gateway", "proxy")}
        loads.append(os.getloadavg())
        for r in range(rounds):
            prompts = prompts_of(r)
            before = await asyncio.to_thread(scrape_steps, topology.metrics_url)
            results["fresh"].append(await burst(direct, prompts, signed))
            after = await asyncio.to_thread(scrape_steps, topology.metrics_url)
            bursts.append(after - before)
            # every answer is cached now
            results["replay"].append(await clocks["direct"].measure(burst(direct, prompts, signed)))
            results["gateway"].append(await clocks["gateway"].measure(burst(via, prompts, bearer)))
            results["proxy"].append(await clocks["proxy"].measure(burst(bare, prompts, signed)))
        loads.append(os.getloadavg())
        per_stream = streams * rounds
        for path, clock in clocks.items():
            for name, seconds in clock.spent.items():
                cpu[f"{path}/{name}"] = seconds / per_stream

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model")
        run = run_in_one_process if one_process else run_in_processes
        started = time.perf_counter()
        await run(root, model_dir, measure)
        elapsed = time.perf_counter() - started
        # Measured after the servers stopped, so nothing of ours competes with it.
        floor_prefill, floor_decode = compute_floor(model_dir, prompts_of(0))
        tokens = prompt_tokens(model_dir, prompts_of(0))
        context = GPT2Config.from_pretrained(model_dir).n_positions
    budget = default_limits(context_length=context, device="cpu").max_prefill_tokens

    f50, f99 = median_pair(results["fresh"])
    c50, c99 = median_pair(results["replay"])
    g50, g99 = median_pair(results["gateway"])
    b50, b99 = median_pair(results["proxy"])
    compute = floor_prefill + floor_decode
    shape = (
        "one process (servers and client on one event loop)"
        if one_process
        else ("separate processes (inference, gateway, registry, trainer, redis; client here)")
    )
    print(f"{streams} simultaneous GenerateStream calls, median of {rounds} rounds; {shape}")
    print(
        f"  host: {psutil.cpu_count()} cores; load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.1f}' for x in loads[0])}, at end "
        f"{'/'.join(f'{x:.1f}' for x in loads[-1])}; run took {elapsed:.0f} s"
    )
    for label, p50, q99 in (
        ("fresh prompts (continuous batch)", f50, f99),
        ("replayed from the cache (floor) ", c50, c99),
        ("replayed, through the gateway   ", g50, g99),
        ("replayed, through a bare proxy  ", b50, b99),
    ):
        print(f"  {label}: TTFT p50 {p50 * 1e3:6.1f} ms  p99 {q99 * 1e3:6.1f} ms")
    print(
        f"  compute floor (bare model, 1 thread): prefill of {len(tokens)} prompts x "
        f"{max(tokens)} tokens (padded; {sum(tokens)} real) {floor_prefill * 1e3:.1f} ms + "
        f"first decode step {floor_decode * 1e3:.1f} ms = {compute * 1e3:.1f} ms; "
        f"prefill budget per step {budget} tokens"
    )
    print(f"  fresh p99 over the cache floor's p99: {f99 / c99:.2f}x (goal <= 2)")
    print(
        f"  fresh p99 over cache floor + compute floor ({(c99 + compute) * 1e3:.1f} ms): "
        f"{f99 / (c99 + compute):.2f}x"
    )
    print(
        "  per fresh burst (inference /metrics, median): "
        f"{statistics.median(b.prefill_steps for b in bursts):.0f} prefill steps over "
        f"{statistics.median(b.prefill_rows for b in bursts):.0f} rows taking "
        f"{statistics.median(b.prefill_seconds for b in bursts) * 1e3:.1f} ms, "
        f"{statistics.median(b.decode_steps for b in bursts):.0f} decode steps taking "
        f"{statistics.median(b.decode_seconds for b in bursts) * 1e3:.1f} ms; a sequence "
        f"waited {statistics.median(b.queue_seconds / b.admitted for b in bursts) * 1e3:.1f} ms "
        "in the scheduler's queue on average, and got its first token "
        f"{statistics.median(b.first_token_steps / b.admitted for b in bursts):.1f} forward "
        "passes after it was submitted"
    )
    print(f"  gateway fan-in, cached p99 via gateway over direct: {g99 / c99:.2f}x (goal <= 1.3)")
    print(f"  bare grpc.aio proxy (any Python hop's floor) over direct: {b99 / c99:.2f}x")
    print("  CPU per cached stream (ms), direct | via gateway | via bare proxy:")
    names = sorted({key.split("/", 1)[1] for key in cpu})
    for name in names:
        print(
            f"    {name:<18} {cpu[f'direct/{name}'] * 1e3:6.2f} | "
            f"{cpu[f'gateway/{name}'] * 1e3:6.2f} | {cpu[f'proxy/{name}'] * 1e3:6.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-bare-proxy", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="servers and client in this process, on one event loop (the older shape)",
    )
    args = parser.parse_args()
    if args.serve_bare_proxy:
        asyncio.run(serve_bare_proxy(int(args.serve_bare_proxy[0]), args.serve_bare_proxy[1]))
        raise SystemExit
    asyncio.run(main(args.streams, args.rounds, args.one_process))
