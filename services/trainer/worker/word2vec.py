"""A WORD2VEC job: gensim's Word2Vec with its own worker threads, inside a trainer job.

gensim does the training; this module feeds it the dataset's word lists, turns
its epoch callbacks into the job's metrics events (epoch = step, loss per word,
words/s, so WatchJob shows progress and an ETA like any job), evaluates the
vectors and writes the artifact.
"""

from __future__ import annotations

import os
import time

from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from lattice.v1 import trainer_pb2
from services.runtime.word_vector_files import write_vectors
from services.trainer.worker import word_vectors
from services.trainer.worker.config import WorkerConfig
from services.trainer.worker.events import EventWriter
from services.trainer.worker.words import load_sentences


class _Progress(CallbackAny2Vec):
    """Emits one metrics event per epoch."""

    def __init__(self, events: EventWriter, epochs: int, words_per_epoch: int) -> None:
        self.events, self.epochs, self.words = events, epochs, words_per_epoch
        self.epoch, self.started, self.loss_so_far = 0, 0.0, 0.0
        self.last_loss = float("nan")
        self.seconds = 0.0

    def on_epoch_begin(self, model: Word2Vec) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, model: Word2Vec) -> None:
        elapsed = time.perf_counter() - self.started
        self.seconds += elapsed
        self.epoch += 1
        total = float(model.get_latest_training_loss())  # cumulative over this train()
        self.last_loss = (total - self.loss_so_far) / max(1, self.words)
        self.loss_so_far = total
        self.events.emit(
            "metrics",
            step=self.epoch,
            epoch=self.epoch - 1,
            loss=self.last_loss,
            learning_rate=float(model.min_alpha_yet_reached),
            tokens_per_second=self.words / elapsed if elapsed > 0 else 0.0,
            total_steps=self.epochs,
        )


def options_of(spec: trainer_pb2.JobSpec) -> dict:
    """gensim's keyword arguments for the (already defaulted) spec."""
    opts = spec.word_embedding
    return {
        "vector_size": opts.dimensions,
        "window": opts.window,
        "min_count": opts.min_count,
        "negative": opts.negative,
        "sg": int(opts.algorithm != trainer_pb2.WORD_VECTOR_ALGORITHM_CBOW),
        "workers": opts.workers or os.cpu_count() or 1,
        "epochs": spec.hyperparameters.epochs,
        "seed": spec.hyperparameters.seed or 1,
        "alpha": spec.hyperparameters.learning_rate,
    }


def run(config: WorkerConfig) -> None:
    spec = config.spec
    opts = spec.word_embedding
    events = EventWriter(config.events_path)
    whitespace = opts.segmentation == trainer_pb2.WORD_SEGMENTATION_WHITESPACE
    try:
        sentences = load_sentences(config.dataset_dir, whitespace, config.dataset_keys())
        kwargs = options_of(spec)
        model = Word2Vec(**{k: v for k, v in kwargs.items() if k != "epochs"}, compute_loss=True)
        model.build_vocab(sentences)
        if not model.wv.index_to_key:
            raise ValueError(
                f"no word occurs at least min_count={opts.min_count} times in the dataset"
            )
    except Exception as error:
        events.emit("setup_failed", rank=0, message=f"{type(error).__name__}: {error}")
        raise
    epochs = kwargs["epochs"]
    events.emit(
        "started",
        step=0,
        total_steps=epochs,
        world_size=1,
        threads=kwargs["workers"],
        allocator="gensim",
    )
    progress = _Progress(events, epochs, model.corpus_total_words)
    model.train(
        sentences,
        total_examples=model.corpus_count,
        epochs=epochs,
        compute_loss=True,
        callbacks=[progress],
    )
    metrics, near = word_vectors.evaluate(
        model.wv, opts.similarity_pairs_path, opts.analogies_path, list(opts.neighbour_samples)
    )
    write_vectors(
        model.wv,
        config.export_dir,
        "WORD2VEC",
        opts.binary,
        {"algorithm": "skip-gram" if kwargs["sg"] else "cbow"},
    )
    result = {
        "outcome": "completed",
        "step": epochs,
        "tokens_per_second": epochs * model.corpus_total_words / progress.seconds
        if progress.seconds
        else 0.0,
        "metrics": {**metrics, "loss_per_word": progress.last_loss},
        "neighbours": near,
        "format": "ARTIFACT_FORMAT_WORD_VECTORS",
        "export_dir": str(config.export_dir),
    }
    config.write_result(result)
    events.emit("finished", outcome="completed", step=epochs)
