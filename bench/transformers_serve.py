"""Lattice against `transformers serve`: streamed tokens/s and time to first
token, same model, same load, each through its own OpenAI-compatible
`/v1/completions`, driven by the official `openai` client (AsyncOpenAI).

Model: bench/streaming.py's starter-size GPT-2 (2 layers, hidden 128,
vocabulary 2000, random weights, a byte-level BPE trained on the standard
library), saved once to a directory that both servers load. Nothing downloads.

Servers, one after the other, never at once (the host has 2 shared cores):
- `transformers serve DIR --device cpu`, its default path (one request at a
  time, `model.generate` with a streamer, in a process of its own behind the
  API process), and again with `--continuous-batching` (its paged-attention
  batching manager) and `--cb-num-blocks` sized for this load: left alone, on
  CPU it sizes the KV cache from the host's free memory (about 80% of it, a
  minute to allocate). Both run with `OMP_NUM_THREADS` set to the torch
  threads Lattice's inference uses (`--peer-threads`; cores - 1, so 1 here):
  with torch's default of one thread per core, a batch-1 step of this model
  on the loaded 2-core host takes 14-40 ms instead of 2.6 ms, and the
  comparison would be of a thread setting, not of the servers.
- Lattice as `lattice up` runs it (`LocalSuite`: registry, inference, trainer
  and gateway, each its own process, plus the bundled Redis), the model
  registered and deployed through the gateway, reached at the gateway's HTTP
  front with a dev JWT: the whole request path (JWT, policy, quotas, routing,
  response cache, gRPC hop, scheduler).

Load, identical for every server: greedy (temperature 0), `--tokens` new
tokens, `stream=True` with `stream_options.include_usage`, prompts that no
server has seen before (so Lattice's response cache cannot answer them; the
inference service's cache-hit counter is read after the run to show it).
- burst: `--streams` requests at once; aggregate completion tokens/s (from
  the usage chunk) and TTFT p50/p99 (time to the first chunk carrying text);
- sequential: `--sequential` requests one at a time (each server's baseline).
Each of `--rounds` rounds starts every server afresh, one after another,
and gives it a short warm-up burst, a burst and a sequential pass: the ratios
are taken within a round (the shared host drifts over a run) and their median
over rounds is the headline; the table shows each server's best round's
tokens/s and median TTFT p50/p99.
Server CPU per completion token, by process, is printed too: on a shared
host it is steadier than the wall clock. `--layers` also times Lattice's
burst over gRPC through the gateway and straight to inference, to show which
hop the time goes to.

Checks printed: answers short of `--tokens` or not ended by "length" (none
in practice: the random-weight model does not pick EOS within 64 tokens; it
would end both servers' answers alike, greedy text from the same weights
being the same), and how many greedy texts each peer shares with Lattice.
(About 1 in 20 differ, all the same way: the random-weight model ends with an
incomplete UTF-8 character, which `tokenizer.decode` of the 64 tokens, and
Lattice, render as U+FFFD; transformers serve's streamer holds it back and
never sends it. Lattice's texts equal `model.generate` + decode, checked by
hand on 48 of the prompts.)

What `transformers serve` (5.25) honours per request, checked by hand:
`max_tokens` on both paths; `temperature` only where the model's generation
config samples (`do_sample`, false for this GPT-2): otherwise it stays greedy
silently. A request's `generation_config` JSON (`{"do_sample": true}`) makes
the plain path sample; continuous batching ignores a request's temperature
for this model (it logs "ignored: ['temperature']"). Both stream
`/v1/completions`, so no chat template is needed. No `ignore_eos`; a request's
`generation_config` could set `min_new_tokens` on the plain path. Lattice's
`/v1` has neither, so the load relies on the model not picking EOS.

    .venv/bin/python bench/transformers_serve.py [--streams 32] [--tokens 64]
        [--sequential 16] [--rounds 3] [--peer-threads N] [--layers]
    make bench-transformers-serve

`transformers serve` needs `transformers[serving]` (it adds fastapi and
accelerate to the project's environment: the `bench` extra; the make target
installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx2
import psutil
from grpc import aio
from http_overhead import MODEL, deploy, free_port
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from prometheus_client.parser import text_string_to_metric_families
from streaming import build_model

from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.inference.causal_lm import default_torch_threads
from services.runtime.identity import Caller
from services.suite.local import LocalSuite, SuiteConfig, dev_secret
from services.suite.signing import internal_token


@dataclasses.dataclass
class Answer:
    ttft: float
    tokens: int
    finish: str
    text: str


@dataclasses.dataclass
class Phase:
    """One burst or one sequential pass."""

    seconds: float
    answers: list[Answer]
    cpu: dict[str, float]  # server CPU seconds, by process

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.answers)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    def ttft(self, q: float) -> float:
        ordered = sorted(a.ttft for a in self.answers)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclasses.dataclass
class Result:
    name: str
    burst: list[Phase]
    sequential: list[Phase]
    texts: dict[str, str]
    short: list[Answer] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def best_rate(self, phases: list[Phase]) -> float:
        return max(p.rate for p in phases)

    def median_ttft(self, phases: list[Phase], q: float) -> float:
        return statistics.median(p.ttft(q) for p in phases)

    def cpu_ms_per_token(self, phases: list[Phase]) -> dict[str, float]:
        tokens = sum(p.tokens for p in phases)
        labels = sorted({label for p in phases for label in p.cpu})
        return {
            label: 1000 * sum(p.cpu.get(label, 0.0) for p in phases) / tokens for label in labels
        }


class Server:
    """A running server: its `/v1` base URL, bearer key, model name and processes."""

    def __init__(self, base_url: str, key: str, model: str, pids: Callable[[], list[int]]):
        self.base_url, self.key, self.model, self._pids = base_url, key, model, pids
        #: Lattice only: the suite (for `--layers` and the cache-hit counter).
        self.suite: LocalSuite | None = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each of its processes, by label."""
        used: dict[str, float] = {}
        for pid in self._pids():
            try:
                process = psutil.Process(pid)
                times, label = process.cpu_times(), process_label(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            used[label] = used.get(label, 0.0) + times.user + times.system
        return used


def process_label(argv: list[str]) -> str:
    """A Lattice service by name, Redis, or transformers serve's API server and engine."""
    line = " ".join(argv)
    if "-m services." in line:
        return line.split("-m services.", 1)[1].split()[0]
    if "redis-server" in line:
        return "redis"
    if "multiprocessing.forkserver" in line:  # inference's decode processes
        return "decode"
    if "spawn_main" in line:  # the process `transformers serve` runs the model in
        return "engine"
    if " serve " in f"{line} ":
        return "api"
    return "other"


def process_tree(root: int, *, with_root: bool = True) -> Callable[[], list[int]]:
    """The pids of `root` (unless `with_root` is false) and all its descendants, now."""

    def pids() -> list[int]:
        try:
            children = [c.pid for c in psutil.Process(root).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [root, *children] if with_root else children

    return pids


def prompts(tag: str, count: int) -> list[str]:
    """`count` prompts never used before in this run (distinct from every other tag)."""
    return [f"def handler_{tag}_{i}(request, context):\n    " for i in range(count)]


async def one(client: AsyncOpenAI, model: str, prompt: str, tokens: int) -> Answer:
    started = time.perf_counter()
    first = None
    finish, usage, pieces = "", None, []
    stream = await client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.text:
                if first is None:
                    first = time.perf_counter() - started
                pieces.append(choice.text)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    if first is None or usage is None:
        raise RuntimeError(f"no text or no usage for {prompt!r}")
    return Answer(first, usage.completion_tokens, finish, "".join(pieces))


async def phase(
    server: Server, client: AsyncOpenAI, batch: list[str], tokens: int, together: bool
) -> Phase:
    before = server.cpu()
    started = time.perf_counter()
    if together:
        answers = list(await asyncio.gather(*(one(client, server.model, p, tokens) for p in batch)))
    else:
        answers = [await one(client, server.model, p, tokens) for p in batch]
    seconds = time.perf_counter() - started
    cpu = {label: used - before.get(label, 0.0) for label, used in server.cpu().items()}
    return Phase(seconds, answers, cpu)


def openai_client(base_url: str, key: str) -> AsyncOpenAI:
    """No retries (a retried request would hide in the latencies). Idle pooled
    connections are dropped after 2 s, before the servers' uvicorn closes them
    (after 5 s): reusing one just as the server closes it fails the request."""
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=2)
    return AsyncOpenAI(
        base_url=base_url,
        api_key=key,
        max_retries=0,
        timeout=300,
        http_client=DefaultAsyncHttpxClient(limits=limits),
    )


async def measure_round(result: Result, server: Server, r: int, args: argparse.Namespace) -> None:
    """Round `r` on a freshly started server: a short warm-up burst (connections,
    lazy imports, the batch path), then a burst and a sequential pass."""
    client = openai_client(server.base_url, server.key)
    try:
        await phase(server, client, prompts(f"w{r}", min(args.streams, 8)), 8, together=True)
        batch, alone = prompts(f"b{r}", args.streams), prompts(f"s{r}", args.sequential)
        burst = await phase(server, client, batch, args.tokens, together=True)
        sequential = await phase(server, client, alone, args.tokens, together=False)
    finally:
        await client.close()
    result.burst.append(burst)
    result.sequential.append(sequential)
    answers = burst.answers + sequential.answers
    result.texts.update(zip(batch + alone, (a.text for a in answers), strict=True))
    result.short += [a for a in answers if a.tokens != args.tokens or a.finish != "length"]


# --- transformers serve ---------------------------------------------------------------------


def transformers_cli() -> Path:
    cli = Path(sys.executable).parent / "transformers"
    if not cli.exists():
        raise SystemExit(f"{cli} not found: transformers is not installed in this environment")
    return cli


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_health(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 240
    async with httpx2.AsyncClient() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise SystemExit(f"{url} exited:\n{tail(log)}")
            try:
                if (await http.get(url, timeout=1)).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit(f"{url} did not answer in time:\n{tail(log)}")


@contextlib.asynccontextmanager
async def transformers_server(
    name: str, model_dir: Path, log: Path, args: argparse.Namespace, extra: list[str]
) -> AsyncIterator[Server]:
    port = free_port()
    threads = {"OMP_NUM_THREADS": str(args.peer_threads)} if args.peer_threads else {}
    with log.open("a") as out:
        process = await asyncio.create_subprocess_exec(
            str(transformers_cli()),
            "serve",
            str(model_dir),
            *("--device", "cpu", "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning"),
            *extra,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **threads, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
    try:
        started = time.monotonic()
        await wait_health(f"http://127.0.0.1:{port}/health", process, log)
        print(f"  {name}: up in {time.monotonic() - started:.0f} s", flush=True)
        yield Server(
            f"http://127.0.0.1:{port}/v1", "unused", str(model_dir), process_tree(process.pid)
        )
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


# --- Lattice ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lattice_server(model_dir: Path, data_dir: Path) -> AsyncIterator[Server]:
    names = ("gateway", "registry", "inference", "trainer")
    config = SuiteConfig(
        ports=dict(zip(names, (free_port() for _ in names), strict=True)),
        redis_port=free_port(),
        http_port=free_port(),
        data_dir=data_dir,
        grace_seconds=2.0,
    )
    suite = LocalSuite(config, report=lambda line: None)
    started = time.monotonic()
    await suite.start()
    try:
        token = mint_dev_token(dev_secret(suite.config.data_dir), tenant="bench", scopes=ALL_SCOPES)
        await asyncio.to_thread(deploy, config.address("gateway"), token, model_dir)
        print(f"  lattice: up and deployed in {time.monotonic() - started:.0f} s", flush=True)
        server = Server(
            f"http://127.0.0.1:{config.http_port}/v1",
            token,
            MODEL,
            process_tree(os.getpid(), with_root=False),  # the suite's processes, not this client
        )
        server.suite = suite
        yield server
    finally:
        await suite.stop()


@contextlib.asynccontextmanager
async def bare_http_front(port: int, upstream: str, token: str) -> AsyncIterator[None]:
    """bench/bare_http_front.py in a process of its own (the floor of any
    Python HTTP front and gRPC hop), in front of `upstream`."""
    script = Path(__file__).with_name("bare_http_front.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(port),
        upstream,
        env={**os.environ, "BARE_FRONT_TOKEN": token},
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield
    finally:
        process.terminate()
        await process.wait()


async def grpc_answer(stub, prompt: str, tokens: int, metadata) -> Answer:
    parameters = inference_pb2.GenerationParameters(max_new_tokens=tokens)
    request = inference_pb2.GenerateStreamRequest(model=MODEL, prompt=prompt, parameters=parameters)
    started = time.perf_counter()
    first, pieces, last = None, [], None
    async for message in stub.GenerateStream(request, metadata=metadata, timeout=300):
        if message.delta:
            first = first or time.perf_counter() - started
            pieces.append(message.delta)
        last = message
    if first is None or last is None:
        raise RuntimeError(f"no text for {prompt!r}")
    finish = inference_pb2.FinishReason.Name(last.finish_reason)
    return Answer(first, last.usage.completion_tokens, finish, "".join(pieces))


async def layers(suite: LocalSuite, token: str, args: argparse.Namespace) -> None:
    """Where a burst's TTFT goes: the same burst (fresh prompts each time) over
    HTTP through the gateway, over gRPC through the gateway, and over gRPC
    straight to inference, interleaved, `--rounds` times each."""
    config = suite.config
    caller = Caller("bench", "bench-client", frozenset({"admin"}))
    internal = internal_token(config.data_dir, "inference", caller)
    client = openai_client(f"http://127.0.0.1:{config.http_port}/v1", token)
    bare_port = free_port()
    bare_client = openai_client(f"http://127.0.0.1:{bare_port}/v1", "unused")
    async with (
        aio.insecure_channel(config.address("gateway")) as gateway,
        aio.insecure_channel(config.address("inference")) as inference,
        bare_http_front(bare_port, config.address("inference"), internal),
    ):
        paths = {
            "HTTP /v1 via gateway": lambda p: one(client, MODEL, p, args.tokens),
            "HTTP /v1 via a bare front": lambda p: one(bare_client, MODEL, p, args.tokens),
            "gRPC via gateway": lambda p: grpc_answer(
                inference_pb2_grpc.InferenceServiceStub(gateway),
                p,
                args.tokens,
                (("authorization", f"Bearer {token}"),),
            ),
            "gRPC direct to inference": lambda p: grpc_answer(
                inference_pb2_grpc.InferenceServiceStub(inference),
                p,
                args.tokens,
                (("authorization", f"Bearer {internal}"),),
            ),
        }
        figures: dict[str, list[Phase]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for i, (name, call) in enumerate(paths.items()):
                batch = prompts(f"layer{r}_{i}", args.streams)
                started = time.perf_counter()
                answers = list(await asyncio.gather(*(call(p) for p in batch)))
                figures[name].append(Phase(time.perf_counter() - started, answers, {}))
    await client.close()
    await bare_client.close()
    print(f"\nlattice, {args.streams}-stream bursts by path (median of {args.rounds} rounds)")
    for name, phases in figures.items():
        p50 = statistics.median(p.ttft(0.5) for p in phases) * 1e3
        p99 = statistics.median(p.ttft(0.99) for p in phases) * 1e3
        rate = statistics.median(p.rate for p in phases)
        print(f"  {name:<26} TTFT p50 {p50:6.0f} ms  p99 {p99:6.0f} ms  {rate:7.1f} tokens/s")


def cache_hits(metrics_port: int) -> float:
    """Response cache hits the inference service counted over the whole run."""
    text = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lattice_inference_cache_lookups"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("result", "").startswith("hit")
    )


# --- report -----------------------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n{args.streams} concurrent streams and {args.sequential} one at a time, "
        f"{args.tokens} new tokens each, greedy; {args.rounds} rounds, every server "
        "started afresh in each; best round's tokens/s, median TTFT over rounds"
    )
    print(
        f"{'server':<26}{'burst tok/s':>12}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'seq tok/s':>11}{'seq TTFT p50':>14}{'burst/seq':>10}{'CPU ms/tok':>12}"
    )
    for r in results:
        burst, alone = r.best_rate(r.burst), r.best_rate(r.sequential)
        print(
            f"{r.name:<26}{burst:>12.1f}{r.median_ttft(r.burst, 0.5) * 1e3:>8.0f}ms"
            f"{r.median_ttft(r.burst, 0.99) * 1e3:>8.0f}ms{alone:>11.1f}"
            f"{r.median_ttft(r.sequential, 0.5) * 1e3:>12.1f}ms{burst / alone:>10.2f}"
            f"{sum(r.cpu_ms_per_token(r.burst).values()):>12.2f}"
        )
    ours = next(r for r in results if r.name == "lattice")
    for r in results:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in r.cpu_ms_per_token(r.burst).items() if v)
        print(f"  {r.name}: server CPU ms per token in the bursts: {parts}")
        if r is not ours:
            same = sum(r.texts[p] == t for p, t in ours.texts.items())
            print(f"  {r.name}: {same}/{len(ours.texts)} greedy texts identical to Lattice's")
        if r.short:
            kinds = sorted({(a.tokens, a.finish) for a in r.short})
            print(f"  {r.name}: {len(r.short)} answers short of {args.tokens} tokens: {kinds}")
        for note in r.notes:
            print(f"  {r.name}: {note}")
    print(
        "\nLattice over transformers serve: median of the rounds' ratios, then each "
        "round's\n(goal: throughput >= 1, TTFT p99 < 1)"
    )
    for r in results:
        if r is ours:
            continue
        pairs = list(zip(ours.burst, r.burst, strict=True))
        solo = list(zip(ours.sequential, r.sequential, strict=True))
        for label, ratios in (
            ("burst tokens/s", [a.rate / b.rate for a, b in pairs]),
            ("burst TTFT p99", [a.ttft(0.99) / b.ttft(0.99) for a, b in pairs]),
            ("burst TTFT p50", [a.ttft(0.5) / b.ttft(0.5) for a, b in pairs]),
            ("sequential tokens/s", [a.rate / b.rate for a, b in solo]),
        ):
            rounds = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"  vs {r.name:<24} {label:<20} {statistics.median(ratios):5.2f}x  ({rounds})")


async def main(args: argparse.Namespace) -> None:
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; transformers serve "
        f"with OMP_NUM_THREADS={args.peer_threads or 'unset'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="lattice-tfserve-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model")
        # Room for the load's KV twice over: a block holds 256 tokens of every layer.
        blocks = max(16, 2 * args.streams * -(-(32 + args.tokens) // 256))
        peers = {
            "transformers serve": [],
            "transformers serve --cb": ["--continuous-batching", "--cb-num-blocks", str(blocks)],
        }
        peers = {name: extra for name, extra in peers.items() if name not in args.skip}
        results = {name: Result(name, [], [], {}) for name in [*peers, "lattice"]}
        hits = 0.0
        for r in range(args.rounds):
            print(f"round {r + 1}", flush=True)
            for name, extra in peers.items():
                log = root / f"{name.replace(' ', '_')}.log"
                async with transformers_server(name, model_dir, log, args, extra) as server:
                    await measure_round(results[name], server, r, args)
            async with lattice_server(model_dir, root / f"lattice{r}") as server:
                await measure_round(results["lattice"], server, r, args)
                assert server.suite is not None
                if args.layers and r == args.rounds - 1:
                    await layers(server.suite, server.key, args)
                port = server.suite.metrics_ports["inference"]
                hits += await asyncio.to_thread(cache_hits, port)
        results["lattice"].notes.append(f"response cache hits: {hits:.0f}")
    report(list(results.values()), args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams in a burst")
    parser.add_argument("--sequential", type=int, default=16, help="requests made one at a time")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also time Lattice's burst over gRPC via the gateway and direct to inference, "
        "and over HTTP through a bare front (bench/bare_http_front.py)",
    )
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=default_torch_threads(),
        help="OMP_NUM_THREADS for transformers serve; default: the torch threads Lattice's "
        "inference uses here (cores - 1); 0: torch's own default (one per core)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["transformers serve", "transformers serve --cb"],
        help="peers not to run",
    )
    asyncio.run(main(parser.parse_args()))
