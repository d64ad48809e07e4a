"""A GLOVE job: a co-occurrence matrix, then weighted least squares, in torch.

No maintained GloVe package installs here (glove-python's last release is
2016-2020 Cython that does not build on Python 3.11), so this follows Pennington
et al. (2014) and Stanford's reference `glove.c`:

- co-occurrence X_ij counts word j within `window` words of word i, each
  occurrence weighted 1/distance, symmetric;
- minimise sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 with
  f(x) = min(1, (x / x_max)^alpha), by AdaGrad over shuffled mini-batches of the
  non-zero entries (the reference uses per-entry AdaGrad; a batch of entries is
  the vectorised form of the same update);
- the word vectors are W + W~, as the reference writes them.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gensim.models import KeyedVectors

from lattice.v1 import trainer_pb2
from services.runtime.word_vector_files import write_vectors
from services.trainer.worker import word_vectors
from services.trainer.worker.config import WorkerConfig
from services.trainer.worker.events import EventWriter
from services.trainer.worker.words import load_sentences


@dataclasses.dataclass(frozen=True)
class Cooccurrence:
    words: list[str]
    rows: np.ndarray  # int64, entry i's word
    cols: np.ndarray  # int64, entry i's context word
    counts: np.ndarray  # float64, X_ij > 0


def build_vocabulary(sentences: Sequence[Sequence[str]], min_count: int) -> list[str]:
    """Words seen at least min_count times, most frequent first (ties by word)."""
    counts = Counter(word for sentence in sentences for word in sentence)
    kept = [(word, n) for word, n in counts.items() if n >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))
    return [word for word, _ in kept]


def cooccurrence(sentences: Sequence[Sequence[str]], words: list[str], window: int) -> Cooccurrence:
    """The symmetric, distance-weighted co-occurrence counts, as sparse entries.

    Out-of-vocabulary words are dropped before windows are taken, as glove.c does.
    """
    index = {word: i for i, word in enumerate(words)}
    ids, owners = [], []
    for number, sentence in enumerate(sentences):
        known = [index[w] for w in sentence if w in index]
        ids.extend(known)
        owners.extend([number] * len(known))
    flat, sentence_of = np.asarray(ids, dtype=np.int64), np.asarray(owners, dtype=np.int64)
    size = len(words)
    keys, weights = [], []
    for distance in range(1, window + 1):
        same = sentence_of[:-distance] == sentence_of[distance:]
        left, right = flat[:-distance][same], flat[distance:][same]
        for a, b in ((left, right), (right, left)):
            keys.append(a * size + b)
            weights.append(np.full(len(a), 1.0 / distance))
    if not keys or not sum(len(k) for k in keys):
        return Cooccurrence(words, *(np.empty(0, dtype=t) for t in (np.int64, np.int64, float)))
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(weights))
    return Cooccurrence(words, unique // size, unique % size, counts)


class GloVe:
    """The model's parameters and its weighted least-squares fit."""

    def __init__(self, vocab_size: int, dimensions: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)

        def uniform(*shape: int) -> torch.nn.Parameter:
            # glove.c: uniform in [-0.5, 0.5) / dimensions
            values = (torch.rand(*shape, generator=generator) - 0.5) / dimensions
            return torch.nn.Parameter(values)

        self.w, self.w_context = uniform(vocab_size, dimensions), uniform(vocab_size, dimensions)
        self.b, self.b_context = uniform(vocab_size), uniform(vocab_size)
        self.generator = generator

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.w, self.w_context, self.b, self.b_context]

    def fit(
        self,
        data: Cooccurrence,
        epochs: int,
        learning_rate: float = 0.05,
        x_max: float = 100.0,
        alpha: float = 0.75,
        batch_size: int = 4096,
        on_epoch: Callable[[int, float, float], None] | None = None,
    ) -> list[float]:
        """AdaGrad over mini-batches of entries; returns each epoch's mean weighted loss."""
        rows, cols = torch.from_numpy(data.rows), torch.from_numpy(data.cols)
        counts = torch.from_numpy(data.counts).float()
        target = counts.log()
        weight = (counts / x_max).pow(alpha).clamp(max=1.0)
        optimizer = torch.optim.Adagrad(self.parameters(), lr=learning_rate)
        losses = []
        for epoch in range(epochs):
            started = time.perf_counter()
            order = torch.randperm(len(counts), generator=self.generator)
            total = 0.0
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                i, j = rows[pick], cols[pick]
                error = (
                    (self.w[i] * self.w_context[j]).sum(1)
                    + self.b[i]
                    + self.b_context[j]
                    - target[pick]
                )
                loss = (weight[pick] * error.square()).sum()
                optimizer.zero_grad(set_to_none=True)
                (loss / 2).backward()  # glove.c's cost is half the squared error
                optimizer.step()
                total += float(loss.detach())
            losses.append(total / max(1, len(counts)))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1], time.perf_counter() - started)
        return losses

    def keyed_vectors(self, words: list[str]) -> KeyedVectors:
        vectors = KeyedVectors(self.w.shape[1])
        vectors.add_vectors(words, (self.w + self.w_context).detach().numpy())
        return vectors


def run(config: WorkerConfig) -> None:
    spec = config.spec
    opts, hp = spec.word_embedding, spec.hyperparameters
    events = EventWriter(config.events_path)
    if opts.workers:
        torch.set_num_threads(opts.workers)
    try:
        whitespace = opts.segmentation == trainer_pb2.WORD_SEGMENTATION_WHITESPACE
        sentences = load_sentences(config.dataset_dir, whitespace, config.dataset_keys())
        words = build_vocabulary(sentences, opts.min_count)
        if not words:
            raise ValueError(
                f"no word occurs at least min_count={opts.min_count} times in the dataset"
            )
        data = cooccurrence(sentences, words, opts.window)
        if not len(data.counts):
            raise ValueError("no two known words occur within the window of each other")
    except Exception as error:
        events.emit("setup_failed", rank=0, message=f"{type(error).__name__}: {error}")
        raise
    epochs = hp.epochs
    events.emit(
        "started",
        step=0,
        total_steps=epochs,
        world_size=1,
        threads=torch.get_num_threads(),
        allocator="glove",
    )
    entries = len(data.counts)

    def on_epoch(epoch: int, loss: float, seconds: float) -> None:
        events.emit(
            "metrics",
            step=epoch + 1,
            epoch=epoch,
            loss=loss,
            learning_rate=hp.learning_rate,
            tokens_per_second=entries / seconds if seconds > 0 else 0.0,
            total_steps=epochs,
        )

    model = GloVe(len(words), opts.dimensions, hp.seed or 1)
    started = time.perf_counter()
    losses = model.fit(
        data,
        epochs,
        hp.learning_rate,
        opts.glove_x_max or 100.0,
        opts.glove_alpha or 0.75,
        opts.glove_batch_size or 4096,
        on_epoch,
    )
    seconds = time.perf_counter() - started
    vectors = model.keyed_vectors(words)
    metrics, near = word_vectors.evaluate(
        vectors, opts.similarity_pairs_path, opts.analogies_path, list(opts.neighbour_samples)
    )
    write_vectors(
        vectors, config.export_dir, "GLOVE", opts.binary, {"cooccurrence_entries": entries}
    )
    result = {
        "outcome": "completed",
        "step": epochs,
        "tokens_per_second": epochs * entries / seconds if seconds else 0.0,
        "metrics": {**metrics, "glove_loss": losses[-1], "cooccurrence_entries": entries},
        "neighbours": near,
        "format": "ARTIFACT_FORMAT_WORD_VECTORS",
        "export_dir": str(config.export_dir),
    }
    config.write_result(result)
    events.emit("finished", outcome="completed", step=epochs)
