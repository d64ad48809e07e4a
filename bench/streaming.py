"""Continuous batching: streamed tokens/s, TTFT and mixed-length throughput
of the local scheduler, as ratios against baselines measured in the same run.

Model: starter-size GPT-2 (2 layers, 4 heads, hidden 128, vocabulary 2000;
context 512 instead of the starter's 128 so that 256-token answers fit),
random weights, a byte-level BPE trained on the standard library's own
sources. Driven in-process through `TransformersBackend` (the scheduler
without gRPC, routing or cache), its decode loop in a decode process as the
service runs it (`--decode-thread`: in a thread of this process).

1. 32 concurrent streams (64 new tokens, distinct prompts) vs the same 32 one
   at a time: aggregate tokens/s. Ceiling: the bare model's batch-32 decode
   step vs 32 batch-1 steps.
2. TTFT of a burst of 32 streams: p50/p99, and for a stream that joins a
   running batch.
3. Mixed lengths (16..256 new tokens, 256 unary requests by default, all
   submitted at once): continuous batching vs static batching (groups of 32
   that start together and wait for their longest member), three ways: the
   static batcher Lattice had before continuous batching (its decode loop,
   reproduced here: transformers' DynamicCache, a row computed until the
   group's longest finished, the transformers tokenizer decoding each
   token), and that policy on today's scheduler twice, with rows leaving as
   they finish and with rows computed until the longest finished (counted
   at their own lengths). Random weights
   rarely pick EOS early, so rows run to their max_new_tokens.
   The step-count ceiling is printed beside it: the decode steps static
   groups take (each group's longest member) over the steps 32 continuously
   refilled slots take for the same lengths. At equal step cost that is the
   most continuous batching can gain: about 1.2x for 64 requests (the tail,
   where slots empty out, is half the run), 1.6x for 256, 1.8x (the mean of
   the longest of 32 over the mean length) for a long stream of them.

    .venv/bin/python bench/streaming.py [--streams 32] [--requests 256] [--rounds 2]
        [--mixed-only] [--decode-thread]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import random
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.causal_lm import default_torch_threads
from services.inference.detokenize import TextAssembler
from services.inference.transformers_backend import TransformersBackend, set_torch_threads

EOS = "<|endoftext|>"


def build_model(directory: Path, layers: int = 2, hidden: int = 128, heads: int = 4) -> Path:
    """A GPT-2 of the given shape with random weights (default: the starter
    size) and a byte-level BPE trained on the standard library's sources."""
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]
    text = [p.read_text(encoding="utf-8", errors="ignore") for p in sources]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        text,
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    eos = raw.token_to_id(EOS)
    config = GPT2Config(
        vocab_size=raw.get_vocab_size(),
        n_positions=512,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(directory)
    PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token=EOS, pad_token=EOS, model_max_length=512
    ).save_pretrained(directory)
    return directory


def step_ceiling(model_dir: Path, rows: int, context: int = 48, steps: int = 20) -> float:
    """Bare model: 32 batch-1 decode steps over one batch-32 step (each the
    best of 5 interleaved tries: the host is shared, the minimum is the cost)."""
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()

    def per_step(batch: int) -> float:
        with torch.inference_mode():
            ids = torch.randint(0, 1000, (batch, context))
            out = model(input_ids=ids, use_cache=True)
            cache, token = out.cache, ids[:, -1:]
            start = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
            return (time.perf_counter() - start) / steps

    one, many = float("inf"), float("inf")
    for _ in range(5):
        one, many = min(one, per_step(1)), min(many, per_step(rows))
    return rows * one / many


def old_static_batch(model, tokenizer, prompts: list[str], lengths: list[int]) -> int:
    """The pre-continuous-batching static batcher's decode loop for one group
    (greedy): left-padded prompts, transformers' DynamicCache, every row fed
    until the longest is done. Returns the tokens the rows asked for."""
    pad = tokenizer.pad_token_id
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    assemblers = [
        TextAssembler(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), ()) for _ in rows
    ]
    done = [False] * len(rows)
    cache = None
    with torch.inference_mode():
        for _ in range(max(lengths)):
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache, logits = out.cache, out.logits[:, -1]
            tokens = []
            for i, assembler in enumerate(assemblers):
                token = pad
                if not done[i]:
                    token = int(torch.argmax(logits[i]))
                    assembler.push(token)
                    done[i] = assembler.token_count >= lengths[i]
                tokens.append(token)
            ids = torch.tensor(tokens)[:, None]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions[:, -1:] + 1
    for assembler in assemblers:
        assembler.finish()
    return sum(lengths)


def cpu_seconds() -> float:
    """CPU time of this process and its children (the decode process)."""
    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


async def stream(backend, prompt: str, params: GenerationParams, clock: dict) -> int:
    start = time.perf_counter()
    tokens = 0
    async for chunk in backend.stream(prompt, params):
        if "ttft" not in clock and (chunk.delta or chunk.last):
            clock["ttft"] = time.perf_counter() - start
        tokens = chunk.completion_tokens or tokens
    return tokens


def step_counts(lengths: list[int], slots: int) -> tuple[int, int]:
    """Decode steps for `lengths`: static groups of `slots` (each runs to its
    longest member) and `slots` continuously refilled in arrival order."""
    static = sum(max(lengths[i : i + slots]) for i in range(0, len(lengths), slots))
    busy_until: list[int] = []
    for length in lengths:
        start = heapq.heappop(busy_until) if len(busy_until) == slots else 0
        heapq.heappush(busy_until, start + length)
    return static, max(busy_until)


async def stream_figures(backend, count: int, ceiling: float) -> dict:
    """Parts 1 and 2: concurrent vs sequential streams, burst and joining TTFT."""
    greedy = GenerationParams(max_new_tokens=64)
    prompts = [f"def handler_{i}(request, context):\n    " for i in range(count)]
    await stream(backend, prompts[0], greedy, {})  # warm-up

    start = time.perf_counter()
    alone = [await stream(backend, p, greedy, {}) for p in prompts]
    sequential = sum(alone) / (time.perf_counter() - start)

    clocks: list[dict] = [{} for _ in prompts]
    start = time.perf_counter()
    together = await asyncio.gather(
        *(stream(backend, p, greedy, c) for p, c in zip(prompts, clocks, strict=True))
    )
    concurrent = sum(together) / (time.perf_counter() - start)
    ttfts = sorted(c["ttft"] for c in clocks)

    # A stream joining a running batch.
    running = [asyncio.create_task(stream(backend, p, greedy, {})) for p in prompts[1:]]
    await asyncio.sleep(0.05)
    joined: dict = {}
    await stream(backend, prompts[0], GenerationParams(max_new_tokens=4), joined)
    await asyncio.gather(*running)
    return {
        "sequential_tokens_per_s": round(sequential, 1),
        "concurrent_tokens_per_s": round(concurrent, 1),
        "concurrent_over_sequential": round(concurrent / sequential, 2),
        "ceiling_batch_step_ratio": round(ceiling, 2),
        "share_of_ceiling": round(concurrent / sequential / ceiling, 2),
        "burst_ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
        "burst_ttft_p99_ms": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))] * 1000, 1),
        "joining_ttft_ms": round(joined["ttft"] * 1000, 1),
    }


async def mixed_figures(backend, model_dir: Path, count: int, requests: int, rounds: int) -> dict:
    """Part 3: mixed lengths, continuous batching vs three static batchers."""
    rng = random.Random(1)
    lengths = [rng.randint(16, 256) for _ in range(requests)]
    mixed = [
        (f"class Mixed{i}:\n", GenerationParams(max_new_tokens=n)) for i, n in enumerate(lengths)
    ]
    groups = [mixed[i : i + count] for i in range(0, len(mixed), count)]

    async def run(group) -> int:
        results = await asyncio.gather(*(backend.generate(p, q) for p, q in group))
        return sum(r.completion_tokens for r in results)

    async def static() -> int:
        return sum([await run(group) for group in groups])

    async def padded() -> int:
        # The old batcher's policy: every row of a group computed until
        # its longest member finished; a row's own tokens are all that count.
        tokens = 0
        for group in groups:
            longest = max(q.max_new_tokens for _, q in group)
            await run([(p, GenerationParams(max_new_tokens=longest)) for p, _ in group])
            tokens += sum(q.max_new_tokens for _, q in group)
        return tokens

    async def continuous() -> int:
        return await run(mixed)

    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)

    async def old_static() -> int:
        return sum(
            old_static_batch(model, tokenizer, [p for p, _ in g], [q.max_new_tokens for _, q in g])
            for g in groups
        )

    # Interleaved rounds, best of each: load from elsewhere on the machine
    # hits every variant alike. Also per CPU-second of this process and its
    # children (the decode process): on a shared host the wall clock counts
    # other processes' load, CPU time less so.
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(rounds):
        for name, variant in (
            ("static", static),
            ("padded", padded),
            ("continuous", continuous),
            ("old", old_static),
        ):
            start, cpu_start = time.perf_counter(), cpu_seconds()
            tokens = await variant()
            wall[name] = max(tokens / (time.perf_counter() - start), wall.get(name, 0.0))
            per_cpu = tokens / (cpu_seconds() - cpu_start)
            cpu[name] = max(per_cpu, cpu.get(name, 0.0))
    static_steps, continuous_steps = step_counts(lengths, count)
    figures: dict[str, float | int] = {
        "mixed_requests": requests,
        "mixed_step_count_ceiling": round(static_steps / continuous_steps, 2),
        "mixed_continuous_tokens_per_s": round(wall["continuous"], 1),
    }
    for name, label in (
        ("old", "old_static_batcher"),
        ("padded", "padded_static"),
        ("static", "static"),
    ):
        figures[f"mixed_{label}_tokens_per_s"] = round(wall[name], 1)
        figures[f"mixed_continuous_over_{label}"] = round(wall["continuous"] / wall[name], 2)
        figures[f"mixed_per_cpu_second_continuous_over_{label}"] = round(
            cpu["continuous"] / cpu[name], 2
        )
    return figures


async def main(
    count: int, requests: int, rounds: int, mixed_only: bool, decode_thread: bool
) -> None:
    set_torch_threads(0)  # the bare-model ceiling runs as the decode loop would
    figures: dict = {
        "streams": count,
        "torch_threads": default_torch_threads(),
        "decode_loop": "thread" if decode_thread else "process",
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model")
        backend = TransformersBackend(
            LoadSpec("bench", 1, Task.GENERATE, model_dir=model_dir),
            decode_process=not decode_thread,
        )
        await backend.load()
        try:
            if not mixed_only:
                ceiling = step_ceiling(model_dir, count)
                figures |= await stream_figures(backend, count, ceiling)
            figures |= await mixed_figures(backend, model_dir, count, requests, rounds)
        finally:
            await backend.unload()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256, help="mixed-length requests")
    parser.add_argument("--rounds", type=int, default=2, help="mixed-length rounds (best of)")
    parser.add_argument("--mixed-only", action="store_true", help="only the mixed-length part")
    parser.add_argument(
        "--decode-thread", action="store_true", help="the decode loop in a thread of this process"
    )
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.requests, args.rounds, args.mixed_only, args.decode_thread))
