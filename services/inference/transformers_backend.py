"""The `transformers` backend: causal LMs and encoders on torch.

Generation goes through the model's decode loop (services.inference.scheduler):
continuous batching, shared by Generate and GenerateStream, in a decode
process of its own (`decode_process`, the service's default) or in a thread
of this process. Embeddings and classifications run in this backend's thread
pool. No torch work runs on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from opentelemetry import trace

from lattice.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.inference.backends import (
    Backend,
    ClassificationResult,
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    LoadSpec,
    ModelInfo,
    StreamChunk,
    Task,
    require_task,
)
from services.inference.causal_lm import (
    DecodeLoopOptions,
    context_length_of,
    default_torch_threads,
    resolve_device,
    start_decode_loop,
)
from services.inference.chat import ChatRenderer, ChatTurn
from services.inference.decode_process import DecodeProcess
from services.inference.decode_worker import WorkerSpec
from services.inference.scheduler import DecodeLoop, GenerationHandle, SchedulerObserver
from services.runtime.context import deadline_var
from services.runtime.logs import logging_setup

log = logging.getLogger(__name__)


def set_torch_threads(threads: int) -> None:
    """Size the calling thread's intra-op pool (OpenMP keeps it per thread)."""
    import torch

    torch.set_num_threads(threads or default_torch_threads())


class TransformersBackend(Backend):
    """One Hugging Face model directory.

    A causal LM gets one decode loop at load: a `DecodeProcess` with
    `decode_process=True` (the model then lives only there; this process keeps
    its tokenizer), else a `Scheduler` thread here. An encoder runs each
    (micro-batched) Embed call, a sequence classifier each (micro-batched)
    Classify call, in a small thread pool."""

    kind: ClassVar[str] = "transformers"

    def __init__(
        self,
        spec: LoadSpec,
        *,
        max_batch_size: int = 32,
        threads: int = 4,
        torch_threads: int = 0,
        scheduling: Mapping[str, int] | None = None,
        observer: SchedulerObserver | None = None,
        tracer: trace.Tracer | None = None,
        decode_process: bool = False,
    ) -> None:
        super().__init__(spec)
        self._decode_process = decode_process
        self.max_batch_size = max_batch_size
        self._threads = threads
        self._torch_threads = torch_threads
        self._scheduling = dict(scheduling or {})
        self._observer = observer
        self._tracer = tracer
        self._executor: ThreadPoolExecutor | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._chat = ChatRenderer(None, spec.model_name)
        self._device = "cpu"
        self._context_length: int | None = None
        #: The fast tokenizer set up once to truncate and pad a batch (encoders).
        self._batch_tokenizer: Any = None
        #: A classifier's labels, in the order of its logits.
        self._labels: list[str] = []
        # Per instance, so that it goes away with the backend.
        self._count = functools.lru_cache(maxsize=4096)(self._count_uncached)
        #: The decode loop of a causal LM (None for an encoder or when unloaded).
        self.scheduler: DecodeLoop | None = None

    # -- lifecycle -------------------------------------------------------

    async def load(self) -> ModelInfo:
        if self.spec.model_dir is None:
            raise FailedPrecondition(
                f"{self.spec.model_name}:{self.spec.version} has no artifact to load"
            )
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.spec.task is Task.GENERATE else self._threads,
            thread_name_prefix=f"tf-{self.spec.model_name}-{self.spec.version}",
            initializer=set_torch_threads,
            initargs=(self._torch_threads,),
        )
        return await self._run(self._load_sync)

    def _load_sync(self) -> ModelInfo:
        from transformers import (
            AutoModel,
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self._device = resolve_device(self.spec.device)
        directory = str(self.spec.model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        self._chat = ChatRenderer(self._tokenizer, self.spec.model_name)
        if self.spec.task is Task.GENERATE and self._decode_process:
            process = DecodeProcess(
                WorkerSpec(directory, self._device, self._loop_options(), logging_setup()),
                observer=self._observer,
            )
            self.scheduler = process
            self._context_length = process.context_length
            return ModelInfo(context_length=self._context_length)
        loader = {
            Task.GENERATE: AutoModelForCausalLM,
            Task.EMBED: AutoModel,
            Task.CLASSIFY: AutoModelForSequenceClassification,
        }[self.spec.task]
        model = loader.from_pretrained(directory)
        self._model = model.to(self._device).eval()
        config = model.config
        self._context_length = context_length_of(config)
        if self.spec.task is Task.CLASSIFY and self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token  # as the trainer does
        if self.spec.task is Task.GENERATE:
            scheduler = start_decode_loop(
                model,
                self._tokenizer,
                self._device,
                self._loop_options(),
                observer=self._observer,
                tracer=self._tracer,
            )
            self.scheduler = scheduler
            self._context_length = scheduler.context_length
        elif self.spec.task is Task.EMBED:
            self._batch_tokenizer = batch_tokenizer(self._tokenizer, self._context_length)
        else:
            # A classifier truncates where it was trained (its tokenizer's
            # model_max_length, which a SEQUENCE_CLASSIFICATION job sets).
            trained = self._tokenizer.model_max_length
            limit = min(trained, self._context_length or trained)
            self._context_length = limit
            self._batch_tokenizer = batch_tokenizer(self._tokenizer, limit)
        if self.spec.task is Task.CLASSIFY:
            labels = getattr(config, "id2label", None) or {}
            self._labels = [str(labels[i]) for i in sorted(labels)]
            if len(self._labels) < 2:
                raise FailedPrecondition(
                    f"{self.spec.model_name}:{self.spec.version} is a classifier without labels"
                )
        return ModelInfo(
            context_length=self._context_length,
            embedding_dim=getattr(config, "hidden_size", None)
            if self.spec.task is Task.EMBED
            else None,
        )

    def _loop_options(self) -> DecodeLoopOptions:
        return DecodeLoopOptions(
            name=f"{self.spec.model_name}:{self.spec.version}",
            torch_threads=self._torch_threads,
            scheduling=self._scheduling,
        )

    async def unload(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        held_weights = self._model is not None  # not with a decode process: they were there
        self._model = None
        self._tokenizer = None
        self._chat = ChatRenderer(None, self.spec.model_name)
        self._batch_tokenizer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if held_weights and self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    async def health(self) -> bool:
        if self.spec.task is Task.GENERATE:
            return self.scheduler is not None and self.scheduler.alive
        return self._model is not None

    def lost(self) -> str | None:
        scheduler = self.scheduler
        if scheduler is None or scheduler.alive:
            return None
        return scheduler.stopped_because or "its decode loop stopped"

    def count_tokens(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        return self._count(text)

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        return self._chat.render(turns)

    def _count_uncached(self, text: str) -> int:
        # The raw `tokenizers` object: ~10x cheaper than the transformers
        # wrapper, which matters on the cache-hit path (policy is checked first).
        return len(self._tokenizer.backend_tokenizer.encode(text, add_special_tokens=True).ids)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} is not loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- generation ------------------------------------------------------

    def _require(self, task: Task) -> None:
        require_task(self.spec.model_name, self.spec.task, task)
        loaded = self.scheduler if task is Task.GENERATE else self._model
        if loaded is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} is not loaded")

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self._tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise InvalidArgument("prompt", "the prompt encodes to no tokens")
        if self._context_length and len(ids) >= self._context_length:
            raise InvalidArgument(
                "prompt",
                f"{len(ids)} tokens; the model's context is {self._context_length} tokens",
            )
        return ids

    def _submit(
        self, prompt: str, params: GenerationParams, *, streaming: bool
    ) -> GenerationHandle:
        self._require(Task.GENERATE)
        assert self.scheduler is not None
        return self.scheduler.submit(
            self._prompt_ids(prompt), params, streaming=streaming, deadline=deadline_var.get()
        )

    async def generate(self, prompt: str, params: GenerationParams) -> GenerationResult:
        handle = self._submit(prompt, params, streaming=False)
        try:
            last = await handle.next()
        except asyncio.CancelledError:
            handle.cancel()  # leaves the batch before the next step
            raise
        assert last.finish_reason is not None
        return GenerationResult(
            last.delta, last.prompt_tokens, last.completion_tokens, last.finish_reason
        )

    async def stream(
        self, prompt: str, params: GenerationParams
    ) -> AsyncGenerator[StreamChunk, None]:
        handle = self._submit(prompt, params, streaming=True)
        try:
            while True:
                chunk = await handle.next()
                yield chunk
                if chunk.last:
                    return
        finally:
            handle.cancel()  # closed or abandoned: leaves the batch at once

    @property
    def tokens_generated(self) -> int:
        """Tokens produced by the decode loop since load (tests and metrics)."""
        return self.scheduler.tokens_generated if self.scheduler is not None else 0

    @property
    def active_generations(self) -> int:
        """Sequences queued or running now."""
        return self.scheduler.active if self.scheduler is not None else 0

    # -- embeddings ------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbeddingResult:
        self._require(Task.EMBED)
        return await self._run(self._embed_sync, list(texts), normalize)

    def _embed_sync(self, texts: list[str], normalize: bool) -> EmbeddingResult:
        import torch

        with torch.inference_mode():
            return self._embed_batch(texts, normalize)

    def _encode_batch(self, texts: list[str]) -> tuple[Any, dict[str, Any], list[int]]:
        """(model, tensors on the device, token counts) for a padded, truncated batch."""
        model, tokenizer = self._model, self._tokenizer
        if model is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} was unloaded")
        if self._batch_tokenizer is not None:
            batch, counts = self._batch_tokenizer.encode(texts)
        else:  # a slow (Python) tokenizer: the transformers call does it all
            batch = tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self._context_length,
                return_tensors="pt",
            )
            counts = batch["attention_mask"].sum(dim=1).tolist()
        return model, {name: t.to(self._device) for name, t in batch.items()}, counts

    def _embed_batch(self, texts: list[str], normalize: bool) -> EmbeddingResult:
        import torch

        model, batch, counts = self._encode_batch(texts)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return EmbeddingResult(vectors=pooled.float().cpu().tolist(), token_counts=counts)

    # -- classification --------------------------------------------------

    async def classify(self, texts: Sequence[str]) -> ClassificationResult:
        self._require(Task.CLASSIFY)
        return await self._run(self._classify_sync, list(texts))

    def _classify_sync(self, texts: list[str]) -> ClassificationResult:
        import torch

        with torch.inference_mode():
            model, batch, counts = self._encode_batch(texts)
            # GPT-2 heads score the last non-pad token; they find it by pad id, so
            # padding is on the right, as the batch tokenizer does.
            probabilities = torch.softmax(model(**batch).logits.float(), dim=-1)
        return ClassificationResult(self._labels, probabilities.cpu().tolist(), counts)


class _BatchTokenizer:
    """A private copy of a fast (Rust) tokenizer that truncates and pads, set up
    once: the same ids as `tokenizer(texts, padding=True, truncation=True)` at a
    fraction of the cost (the transformers call reconfigures the shared Rust
    tokenizer and converts through Python on every batch). A private copy,
    because that reconfiguration would race with other threads."""

    def __init__(self, rust: Any, names: Sequence[str]) -> None:
        self._rust = rust
        self._type_ids = "token_type_ids" in names

    def encode(self, texts: list[str]) -> tuple[dict[str, Any], list[int]]:
        import torch

        encodings = self._rust.encode_batch(texts)
        batch = {
            "input_ids": torch.tensor([e.ids for e in encodings]),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        }
        if self._type_ids:
            batch["token_type_ids"] = torch.tensor([e.type_ids for e in encodings])
        return batch, [sum(e.attention_mask) for e in encodings]


def batch_tokenizer(tokenizer: Any, max_length: int | None) -> _BatchTokenizer | None:
    """The fast path for `tokenizer`, or None for a tokenizer without a Rust core."""
    rust = getattr(tokenizer, "backend_tokenizer", None)
    if rust is None or tokenizer.pad_token_id is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(rust.to_str())
    copy.no_truncation()
    if max_length:
        copy.enable_truncation(max_length=max_length)
    copy.enable_padding(
        direction=tokenizer.padding_side,
        pad_id=tokenizer.pad_token_id,
        pad_token=tokenizer.pad_token,
        pad_type_id=tokenizer.pad_token_type_id,
    )
    return _BatchTokenizer(copy, tokenizer.model_input_names)
