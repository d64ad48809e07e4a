"""A causal LM's decode loop, built the same way wherever it runs: in the
serving process (`TransformersBackend`) or in its own decode process
(`decode_worker`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import psutil
from opentelemetry import trace

from services.inference.kv_batch import KVBatch, exact_span
from services.inference.scheduler import Scheduler, SchedulerObserver, Wakeups, default_limits


def resolve_device(requested: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def default_torch_threads() -> int:
    """torch's intra-op threads when not configured: one core less than this
    process may use, so the event loop and gRPC keep one. Measured on a
    loaded 2-core host (bench/streaming.py's model): with 2 threads a batch-1
    token took 170-240 ms, with 1 thread 2.5 ms: a thread pool that waits
    for a descheduled member at every op is worse than no pool."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def context_length_of(config: Any) -> int | None:
    """The longest sequence the model's positions allow (None: unbounded)."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """ids -> text, through the raw `tokenizers` object when there is one
    (several times cheaper than the transformers wrapper, and it runs twice
    per generated token)."""
    rust = getattr(tokenizer, "backend_tokenizer", None)
    if rust is not None:
        return lambda ids: rust.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def _kv_bytes_per_token(model: Any) -> int:
    """Keys and values of every layer for one token."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0)
    hidden = getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)
    return 2 * layers * hidden * next(model.parameters()).element_size()


def _free_memory(device: str) -> int:
    """Bytes free where the KV cache lives."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return int(psutil.virtual_memory().available)


@dataclasses.dataclass(frozen=True, slots=True)
class DecodeLoopOptions:
    """How to run one model's decode loop (from the inference settings)."""

    name: str
    torch_threads: int = 0
    #: Overrides of `SchedulerLimits` (0 = derive, see `default_limits`).
    scheduling: Mapping[str, int] = dataclasses.field(default_factory=dict)


def start_decode_loop(
    model: Any,
    tokenizer: Any,
    device: str,
    options: DecodeLoopOptions,
    *,
    observer: SchedulerObserver | None = None,
    tracer: trace.Tracer | None = None,
    wakeups: Callable[[], Wakeups] = Wakeups,
) -> Scheduler:
    """The model's `Scheduler`, its loop running. Its `context_length` is the
    model's, within the sliding window of a model that has one: there the KV
    slab's full attention computes exactly what the model would."""
    context = context_length_of(model.config)
    window = exact_span(model.config)
    if window is not None:
        context = min(context or window, window)
    eos = model.config.eos_token_id
    eos_ids = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
    return Scheduler(
        KVBatch(model, device, pad),
        decode=decoder(tokenizer),
        eos_ids=eos_ids,
        device=device,
        context_length=context,
        limits=default_limits(
            context_length=context,
            device=device,
            kv_bytes_per_token=_kv_bytes_per_token(model),
            free_memory=_free_memory(device),
            **options.scheduling,
        ),
        name=options.name,
        torch_threads=options.torch_threads or default_torch_threads(),
        observer=observer,
        tracer=tracer,
        wakeups=wakeups,
    )


def load_causal_lm(directory: str, device: str) -> tuple[Any, Any]:
    """(model on `device` in eval mode, tokenizer) from a model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(directory)
    return model.to(device).eval(), tokenizer
