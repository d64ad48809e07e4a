"""The in-process `transformers` backend: causal LMs and encoders on torch.

Generation is a manual decode loop with a KV cache rather than
`model.generate`, because the loop checks a cancel flag before every step: a
closed stream or a cancelled call stops the model within one token, and the
thread is free for the next request. All torch work runs in this backend's
thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from lattice.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.inference.backends import (
    Backend,
    EmbeddingResult,
    FinishReason,
    GenerationParams,
    GenerationResult,
    LoadSpec,
    ModelInfo,
    StreamChunk,
    Task,
    require_task,
)
from services.inference.detokenize import TextAssembler

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _sample(logits, params: GenerationParams, generator) -> int:
    """Pick the next token from the last position's logits (shape [vocab])."""
    import torch

    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Drop every token after the nucleus already holds top_p of the mass.
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TransformersBackend(Backend):
    """One Hugging Face model directory, served in this process."""

    kind: ClassVar[str] = "transformers"

    def __init__(self, spec: LoadSpec, *, max_batch_size: int = 32, threads: int = 4) -> None:
        super().__init__(spec)
        self.max_batch_size = max_batch_size
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._context_length: int | None = None
        #: The fast tokenizer set up once to truncate and pad a batch (encoders).
        self._batch_tokenizer: Any = None
        self._lock = threading.Lock()
        # Per instance, so that it goes away with the backend.
        self._count = functools.lru_cache(maxsize=4096)(self._count_uncached)
        #: Tokens produced by decode loops since load (tests and metrics read it).
        self.tokens_generated = 0
        #: Decode loops running right now.
        self.active_generations = 0

    # -- lifecycle -------------------------------------------------------

    async def load(self) -> ModelInfo:
        if self.spec.model_dir is None:
            raise FailedPrecondition(
                f"{self.spec.model_name}:{self.spec.version} has no artifact to load"
            )
        self._executor = ThreadPoolExecutor(
            max_workers=self._threads,
            thread_name_prefix=f"tf-{self.spec.model_name}-{self.spec.version}",
        )
        return await self._run(self._load_sync)

    def _load_sync(self) -> ModelInfo:
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self._device = resolve_device(self.spec.device)
        directory = str(self.spec.model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        loader = AutoModelForCausalLM if self.spec.task is Task.GENERATE else AutoModel
        model = loader.from_pretrained(directory)
        self._model = model.to(self._device).eval()
        config = model.config
        self._context_length = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        if self.spec.task is Task.EMBED:
            self._batch_tokenizer = batch_tokenizer(self._tokenizer, self._context_length)
        return ModelInfo(
            context_length=self._context_length,
            embedding_dim=getattr(config, "hidden_size", None)
            if self.spec.task is Task.EMBED
            else None,
        )

    async def unload(self) -> None:
        self._model = None
        self._tokenizer = None
        self._batch_tokenizer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    async def health(self) -> bool:
        return self._model is not None

    def count_tokens(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        return self._count(text)

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
        if self._model is None:
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

    def _decode_loop(self, *args: Any) -> GenerationResult:
        import torch

        with torch.inference_mode():  # grad mode is per thread: set it in the worker
            return self._decode(*args)

    def _decode(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        emit: Callable[[StreamChunk], None] | None,
    ) -> GenerationResult:
        """Runs in a worker thread. `emit` (streaming) gets every delta."""
        import torch

        model, tokenizer = self._model, self._tokenizer
        if model is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} was unloaded")
        eos = model.config.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=self._device).manual_seed(params.seed)
        assembler = TextAssembler(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True), params.stop
        )
        budget = params.max_new_tokens
        if self._context_length:
            budget = min(budget, self._context_length - len(prompt_ids))
        finish = FinishReason.LENGTH
        with self._lock:
            self.active_generations += 1
        try:
            input_ids = torch.tensor([prompt_ids], device=self._device)
            cache = None
            for _ in range(budget):
                if cancel.is_set():
                    finish = FinishReason.CANCELLED
                    break
                # transformers 5 names the KV cache `cache` (was past_key_values).
                out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                token = _sample(out.logits[0, -1], params, generator)
                if token in eos_ids:
                    finish = FinishReason.EOS
                    break
                with self._lock:
                    self.tokens_generated += 1
                delta = assembler.push(token)
                if assembler.stopped:
                    finish = FinishReason.STOP_SEQUENCE
                if emit is not None and delta:
                    emit(StreamChunk(delta))
                if assembler.stopped:
                    break
                input_ids = torch.tensor([[token]], device=self._device)
            tail = assembler.finish()
            result = GenerationResult(
                text=assembler.text,
                prompt_tokens=len(prompt_ids),
                completion_tokens=assembler.token_count,
                finish_reason=finish,
            )
            if emit is not None:
                emit(
                    StreamChunk(
                        tail,
                        finish_reason=finish,
                        prompt_tokens=result.prompt_tokens,
                        completion_tokens=result.completion_tokens,
                    )
                )
            return result
        finally:
            with self._lock:
                self.active_generations -= 1

    async def generate(self, prompt: str, params: GenerationParams) -> GenerationResult:
        self._require(Task.GENERATE)
        ids = self._prompt_ids(prompt)
        cancel = threading.Event()
        try:
            return await self._run(self._decode_loop, ids, params, cancel, None)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops before its next token
            raise

    async def generate_batch(
        self,
        requests: Sequence[tuple[str, GenerationParams]],
        cancels: Sequence[threading.Event] | None = None,
    ) -> list[GenerationResult | BaseException]:
        """One padded decode loop for several prompts (each with its own
        sampling parameters); a request that cannot run fails alone."""
        self._require(Task.GENERATE)
        cancels = list(cancels) if cancels is not None else [threading.Event() for _ in requests]
        results: list[GenerationResult | BaseException | None] = [None] * len(requests)
        rows: list[tuple[list[int], GenerationParams, threading.Event]] = []
        where: list[int] = []
        for i, (prompt, params) in enumerate(requests):
            try:
                rows.append((self._prompt_ids(prompt), params, cancels[i]))
                where.append(i)
            except Exception as exc:
                results[i] = exc
        if rows:
            try:
                decoded = await self._run(self._decode_batch_loop, rows)
            except asyncio.CancelledError:
                for _, _, cancel in rows:
                    cancel.set()
                raise
            for i, result in zip(where, decoded, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _decode_batch_loop(self, rows) -> list[GenerationResult]:
        import torch

        with torch.inference_mode():
            return self._decode_batch(rows)

    def _decode_batch(
        self, rows: list[tuple[list[int], GenerationParams, threading.Event]]
    ) -> list[GenerationResult]:
        """Left-padded batch decode with a KV cache; rows that finish early
        are fed padding until the last one is done (or every row cancelled)."""
        import torch

        model, tokenizer = self._model, self._tokenizer
        if model is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} was unloaded")
        eos = model.config.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
        pad = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else min(eos_ids, default=0)
        )
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids, _, _ in rows], device=self._device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids, _, _ in rows],
            device=self._device,
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [
            torch.Generator(device=self._device).manual_seed(p.seed)
            if p.seed is not None and not p.greedy
            else None
            for _, p, _ in rows
        ]
        assemblers = [
            TextAssembler(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), p.stop)
            for _, p, _ in rows
        ]
        budgets = [
            min(p.max_new_tokens, (self._context_length or 1 << 30) - len(ids))
            for ids, p, _ in rows
        ]
        finish: list[FinishReason | None] = [None] * len(rows)
        cache = None
        with self._lock:
            self.active_generations += 1
        try:
            for _ in range(max(budgets)):
                for i, (_, _, cancel) in enumerate(rows):
                    if finish[i] is None and cancel.is_set():
                        finish[i] = FinishReason.CANCELLED
                if all(f is not None for f in finish):
                    break
                out = model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = out.cache
                logits = out.logits[:, -1]
                next_ids = []
                for i, (_, params, _) in enumerate(rows):
                    token = pad
                    if finish[i] is None:
                        token = _sample(logits[i], params, generators[i])
                        if token in eos_ids:
                            finish[i], token = FinishReason.EOS, pad
                        else:
                            with self._lock:
                                self.tokens_generated += 1
                            assemblers[i].push(token)
                            if assemblers[i].stopped:
                                finish[i] = FinishReason.STOP_SEQUENCE
                            elif assemblers[i].token_count >= budgets[i]:
                                finish[i] = FinishReason.LENGTH
                    next_ids.append(token)
                input_ids = torch.tensor(next_ids, device=self._device)[:, None]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                positions = positions[:, -1:] + 1
        finally:
            with self._lock:
                self.active_generations -= 1
        results = []
        for (ids, _, _), assembler, reason in zip(rows, assemblers, finish, strict=True):
            assembler.finish()
            results.append(
                GenerationResult(
                    text=assembler.text,
                    prompt_tokens=len(ids),
                    completion_tokens=assembler.token_count,
                    finish_reason=reason or FinishReason.LENGTH,
                )
            )
        return results

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamChunk]:
        self._require(Task.GENERATE)
        ids = self._prompt_ids(prompt)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamChunk | BaseException] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: StreamChunk | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._decode_loop(ids, params, cancel, emit)
            except BaseException as exc:
                emit(exc)

        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.last:
                    return
        finally:
            cancel.set()
            future.cancel()  # not yet started: never runs

    # -- embeddings ------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbeddingResult:
        self._require(Task.EMBED)
        return await self._run(self._embed_sync, list(texts), normalize)

    def _embed_sync(self, texts: list[str], normalize: bool) -> EmbeddingResult:
        import torch

        with torch.inference_mode():
            return self._embed_batch(texts, normalize)

    def _embed_batch(self, texts: list[str], normalize: bool) -> EmbeddingResult:
        import torch

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
        batch = {name: tensor.to(self._device) for name, tensor in batch.items()}
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return EmbeddingResult(vectors=pooled.float().cpu().tolist(), token_counts=counts)


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
