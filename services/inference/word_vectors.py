"""Serving a word-embedding version (WORD2VEC, GLOVE): Embed and nearest words.

The artifact is the word2vec format plus `manifest.json` (see the trainer's
`services.runtime.word_vector_files`). Embed returns, per input, the mean of its known
words' vectors and lists the unknown ones. Nearest words are an exact cosine
search over the L2-normalised matrix: one matrix-vector product, which for the
vocabularies trained here (up to a few hundred thousand words) answers in
milliseconds, so no approximate index is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import numpy as np
from gensim.models import KeyedVectors

from lattice.errors import FailedPrecondition, InvalidArgument
from services.inference.backends import (
    Backend,
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    ModelInfo,
    StreamChunk,
)
from services.runtime.word_vector_files import read_vectors
from services.runtime.words import words_of


class WordVectorBackend(Backend):
    kind = "word_vectors"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.vectors: KeyedVectors | None = None
        self._unit: np.ndarray | None = None

    async def load(self) -> ModelInfo:
        await asyncio.to_thread(self._load)
        assert self.vectors is not None
        return ModelInfo(context_length=None, embedding_dim=int(self.vectors.vector_size))

    def _load(self) -> None:
        directory = self.spec.model_dir
        if directory is None:
            raise FailedPrecondition(f"{self.spec.model_name}: version has no artifact")
        vectors = read_vectors(directory, self.spec.model_name)
        matrix = np.asarray(vectors.vectors, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self._unit = matrix / np.where(norms == 0, 1.0, norms)
        self.vectors = vectors

    async def unload(self) -> None:
        self.vectors, self._unit = None, None

    async def health(self) -> bool:
        return self.vectors is not None

    async def generate(self, prompt: str, params: GenerationParams) -> GenerationResult:
        raise FailedPrecondition(f"model {self.spec.model_name!r} is a word-embedding model")

    def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[StreamChunk, None]:
        raise FailedPrecondition(f"model {self.spec.model_name!r} is a word-embedding model")

    def count_tokens(self, text: str) -> int | None:
        return len(words_of(text))

    async def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbeddingResult:
        return self.embed_now(texts, normalize)

    def embed_now(self, texts: Sequence[str], normalize: bool) -> EmbeddingResult:
        """The mean known-word vector of each text (zeros when no word is known)."""
        vectors = self._require()
        rows, counts, unknown = [], [], []
        for text in texts:
            words = words_of(text)
            known = [vectors.key_to_index[w] for w in words if w in vectors.key_to_index]
            missing = [w for w in words if w not in vectors.key_to_index]
            if known:
                row = vectors.vectors[known].mean(axis=0)
            else:
                row = np.zeros(vectors.vector_size, dtype=np.float32)
            if normalize and known:
                norm = float(np.linalg.norm(row))
                row = row / norm if norm else row
            rows.append([float(x) for x in row])
            counts.append(len(words))
            unknown.append(missing)
        return EmbeddingResult(vectors=rows, token_counts=counts, unknown_words=unknown)

    def similar(
        self, word: str | None, vector: Sequence[float] | None, top_k: int
    ) -> list[tuple[str, float]]:
        """The top_k vocabulary words nearest by cosine to `word` (itself excluded)
        or to `vector`."""
        vectors = self._require()
        assert self._unit is not None
        exclude = -1
        if word is not None:
            index = vectors.key_to_index.get(word)
            if index is None:
                raise InvalidArgument("word", f"{word!r} is not in the model's vocabulary")
            query = self._unit[index]
            exclude = index
        else:
            assert vector is not None
            if len(vector) != vectors.vector_size:
                raise InvalidArgument(
                    "vector",
                    f"has {len(vector)} values; the model's vectors have {vectors.vector_size}",
                )
            query = np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(query))
            if not np.isfinite(norm) or norm == 0:
                raise InvalidArgument("vector", "must be finite and non-zero")
            query = query / norm
        scores = self._unit @ query
        if exclude >= 0:
            scores[exclude] = -np.inf
        count = min(top_k, len(scores) - (exclude >= 0))
        if count <= 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top], kind="stable")]
        keys = vectors.index_to_key
        return [(keys[i], float(scores[i])) for i in top]

    def _require(self) -> KeyedVectors:
        if self.vectors is None:
            raise FailedPrecondition(f"model {self.spec.model_name!r} is not loaded")
        return self.vectors
