"""The one interface every inference backend implements, and the plain values
it takes and returns.

Transport-free on purpose: no gRPC, no protobuf. The model manager, batcher and
cache drive a `Backend`; the servicer converts these values to and from the
wire. Two implementations exist: `transformers_backend.TransformersBackend`
(in-process torch) and `triton_backend.TritonBackend` (tritonclient gRPC).

Contract every backend keeps:
- Errors are `lattice.errors` exceptions (`InvalidArgument` for input the
  model cannot take, `Unavailable` when the backend cannot serve now); the
  shared RPC wrapper maps them to status codes.
- Cancelling the task that awaits `generate`/`embed`, or closing / abandoning
  the iterator returned by `stream`, stops the work promptly (the local
  backend drops the sequence from its batch before the next decode step).
- Compute never runs on the event loop.
"""

from __future__ import annotations

import abc
import contextvars
import dataclasses
import enum
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from lattice.errors import FailedPrecondition
from services.inference.chat import ChatTurn, render_default

#: The tenant the current request is served for ("" = anonymous), set by the
#: engine: a backend that queues (the local scheduler) shares its queue fairly
#: between tenants. A context variable, so that the `Backend` methods stay the
#: same for backends that do not care.
request_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")


class Task(enum.Enum):
    """What a loaded model serves (mirrors `lattice.v1.ModelTask`)."""

    GENERATE = "generate"
    EMBED = "embed"
    CLASSIFY = "classify"


class FinishReason(enum.Enum):
    """Why generation stopped (mirrors `lattice.v1.FinishReason`)."""

    LENGTH = "length"
    EOS = "eos"
    STOP_SEQUENCE = "stop_sequence"
    CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling controls, already validated. temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def deterministic(self) -> bool:
        """Same input, same output: greedy or seeded sampling (cacheable)."""
        return self.greedy or self.seed is not None


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationResult:
    """A finished unary generation. `text` excludes the prompt and any stop
    sequence."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


@dataclasses.dataclass(frozen=True, slots=True)
class StreamChunk:
    """One step of a streamed generation.

    Every chunk carries the text added since the previous one (possibly empty:
    a token may complete no printable character yet). The last chunk, and only
    it, has `finish_reason` set together with the token counts.
    """

    delta: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def last(self) -> bool:
        return self.finish_reason is not None


@dataclasses.dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One vector per input text, in input order, and each input's token count
    (so a batcher can split a merged batch's usage per request). Word-embedding
    models also list each input's words missing from their vocabulary."""

    vectors: list[list[float]]
    token_counts: list[int]
    unknown_words: list[list[str]] = dataclasses.field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclasses.dataclass(frozen=True, slots=True)
class ClassificationResult:
    """Per input text, the probability of every label (softmax, in `labels` order),
    and its token count (so a batcher can split a merged batch's usage)."""

    labels: list[str]
    scores: list[list[float]]
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclasses.dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything a backend needs to load one model version.

    `model_dir` is the verified, unpacked artifact (None when the version has
    no artifact, e.g. a `triton://host:port/model` URI naming a model Triton
    already serves). `params` and `tags` are the version's own string maps from
    the registry, where deployment details such as a Triton model name live.
    """

    model_name: str
    version: int
    task: Task
    artifact_uri: str = ""
    artifact_digest: str = ""
    model_dir: Path | None = None
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    device: str = "cpu"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelInfo:
    """What `load` learned about the model; None where a backend cannot tell."""

    context_length: int | None = None
    embedding_dim: int | None = None


class Backend(abc.ABC):
    """One loaded model version behind a uniform async interface.

    Lifecycle: construct (cheap, no I/O) -> `await load()` -> serve ->
    `await unload()`. The model manager never calls serving methods before
    `load` returned or after `unload` started.
    """

    #: "transformers" or "triton"; reported by ListLoadedModels.
    kind: ClassVar[str]

    #: Most texts the batcher may merge into one `embed` call. 1 disables
    #: micro-batching in front of this backend (Triton does its own dynamic
    #: batching server-side). Generation is never micro-batched here: a
    #: backend batches it itself (the local one per decode step, see
    #: `scheduler`; Triton server-side).
    max_batch_size: int = 1

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def load(self) -> ModelInfo:
        """Load weights / check the remote model is ready. Raises on failure."""

    @abc.abstractmethod
    async def unload(self) -> None:
        """Release memory / connections. Idempotent."""

    @abc.abstractmethod
    async def health(self) -> bool:
        """True when the model can serve a request now."""

    def lost(self) -> str | None:
        """Why this loaded backend can never serve again (its decode loop or
        process died), once it knows; None otherwise. Cheap: the model
        manager asks every READY version each second and reloads the lost."""
        return None

    @abc.abstractmethod
    async def generate(self, prompt: str, params: GenerationParams) -> GenerationResult:
        """Unary generation for a causal LM."""

    @abc.abstractmethod
    def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[StreamChunk, None]:
        """Token-by-token generation; an async generator, so that the engine can
        close it (`contextlib.aclosing`). Closing it (`aclose`) or cancelling its consumer stops the
        model within one decode step."""

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbeddingResult:
        """Embeddings for an encoder; `normalize` L2-normalises each vector."""

    async def classify(self, texts: Sequence[str]) -> ClassificationResult:
        """Label probabilities for a classifier. Not abstract: only backends that
        load classification models serve it; the engine routes by task first."""
        raise FailedPrecondition(
            f"model {self.spec.model_name!r} is not served as a classifier by this backend"
        )

    def count_tokens(self, text: str) -> int | None:
        """Prompt length in the model's tokens, for policy limits; None when
        the backend has no tokenizer (the limit is then not enforced here)."""
        return None

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt for a conversation: the model's own chat template where
        the backend has the model's tokenizer (`chat.ChatRenderer`), else the
        documented default."""
        return render_default(turns)


_SERVES = {
    Task.GENERATE: "text generation",
    Task.EMBED: "embeddings",
    Task.CLASSIFY: "classification",
}
_KIND = {
    Task.GENERATE: "a text generation",
    Task.EMBED: "an embedding",
    Task.CLASSIFY: "a classification",
}


def require_task(model_name: str, actual: Task, wanted: Task) -> None:
    """FAILED_PRECONDITION when a model is asked for what it does not serve."""
    if actual is not wanted:
        raise FailedPrecondition(
            f"model {model_name!r} is {_KIND[actual]} model; it does not serve {_SERVES[wanted]}"
        )


#: Builds the backend for a version; the server wires one per artifact format.
BackendFactory = Callable[[LoadSpec], Backend]
