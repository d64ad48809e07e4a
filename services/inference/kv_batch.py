"""The running sequences' KV cache, kept in place in one preallocated slab.

Each row is one sequence. Columns are time: every row's newest token sits in
the same column, so a row's real positions are a span ending at the shared
right edge `end` (left padding before it); `mask` marks them. The model sees
the columns `[start, end)`, where `start` is the oldest running row's first
position.

Why a slab: with transformers' `DynamicCache` every decode step concatenates
the whole cache to append one column, a copy of every row's keys and values
per layer per step. At 32 rows and 256 columns (bench/streaming.py's model)
that copy was most of a step's cost, and the longer the rows the worse.
Here a step writes one column in place; copies happen only when rows join
(their prefilled cache is written in), leave (a row from the end moves into
the freed slot) or the slab runs out of columns (the used region moves, about
once every `_SLACK` steps).

The decode step also passes its own 4-D boolean mask (a view of `mask`), so
transformers builds none per step.

Every row attends over the shared columns, padding included. Splitting rows
into age groups that each attend over their own columns (one attention call
per group) was tried: with rows sorted by age it saved about 10% of a step
at 32 rows of spread ages, but leaves that move a row into a freed slot mix
the ages, and then it measured no faster than one call, so it is not done.

Works on transformers' public cache API: a `Cache` of `CacheLayerMixin`
layers whose `update` returns the keys and values to attend over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

from lattice.errors import FailedPrecondition

#: Free columns right of the used region after a relayout: a relayout (a copy
#: of the used region) happens about once per this many decode steps.
_SLACK = 64
#: Rows are allocated in multiples of this.
_ROW_QUANTUM = 8


def exact_span(config: Any) -> int | None:
    """How many positions of one sequence the slab computes exactly: None for
    any number (every layer attends to the whole sequence), else the smallest
    sliding or chunked window (within it, attending to every position is the
    same computation). Raises FailedPrecondition for layers that hold no
    plain keys and values (linear attention, shared KV), which it cannot serve."""
    types, kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    windows = []
    for kind, extra in zip(types, kwargs, strict=True):
        if kind == "full_attention":
            continue
        if "sliding_window" not in extra:
            raise FailedPrecondition(
                f"local continuous batching serves attention-only decoders; "
                f"this model has {kind!r} layers (serve it through Triton)"
            )
        windows.append(int(extra["sliding_window"]))
    return min(windows, default=None)


class _SlabLayer(DynamicLayer):
    """One model layer's keys and values inside the slab: `update` writes the
    step's new column(s) in place and returns views of the used region."""

    def __init__(self, slab: KVBatch, index: int) -> None:
        super().__init__()
        self._slab = slab
        self._index = index
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        slab = self._slab
        keys, values = slab._keys[self._index], slab._values[self._index]
        rows, end = slab.rows, slab._end
        new = key_states.shape[2]
        keys[:rows, :, end : end + new] = key_states
        values[:rows, :, end : end + new] = value_states
        return (
            keys[:rows, :, slab._start : end + new],
            values[:rows, :, slab._start : end + new],
        )

    def get_seq_length(self) -> int:
        return self._slab.width

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._slab.width + query_length, 0


class PartialPrefill:
    """A long prompt prefilled a chunk at a time, in its own cache, outside
    the batch until its last chunk."""

    __slots__ = ("cache", "done", "prompt")

    def __init__(self, prompt: Sequence[int]) -> None:
        self.prompt = list(prompt)
        self.done = 0  # tokens prefilled so far
        self.cache: Any = None

    @property
    def remaining(self) -> int:
        return len(self.prompt) - self.done


class KVBatch:
    """Prefill, step, merge and shrink a batch of sequences on one causal LM."""

    def __init__(self, model: Any, device: str, pad_id: int) -> None:
        self._model = model
        self._device = device
        self._pad = pad_id
        self._rows = 0
        self._start = 0  # first column any row uses
        self._end = 0  # the column the next token goes to
        self._keys: list[torch.Tensor] = []  # per layer [row_cap, heads, col_cap, dim]
        self._values: list[torch.Tensor] = []
        self._mask: torch.Tensor | None = None  # [row_cap, col_cap] bool, True = real token
        self._positions: torch.Tensor | None = None  # [row_cap], next position per row
        self._cache: Cache | None = None

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def width(self) -> int:
        return self._end - self._start if self._rows else 0

    @property
    def kv_tokens(self) -> int:
        """Cache slots in use (rows x width, padding included)."""
        return self.rows * self.width

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any):
        # transformers 5 names the KV cache `cache` (was past_key_values).
        return self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )

    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run the prompts as one padded batch, append them as new rows, and
        return their last-position logits ([len(prompts), vocab])."""
        width = max(len(p) for p in prompts)
        ids = torch.tensor(
            [[self._pad] * (width - len(p)) + list(p) for p in prompts], device=self._device
        )
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self._device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(ids, mask, positions, None)
        self._merge(out.cache, mask.bool(), mask.sum(-1))
        return out.logits[:, -1]

    def begin_prefill(self, prompt: Sequence[int]) -> PartialPrefill:
        """A prompt to prefill in chunks (`prefill_chunk`)."""
        return PartialPrefill(prompt)

    def prefill_chunk(self, partial: PartialPrefill, tokens: int) -> torch.Tensor | None:
        """Prefill the next `tokens` of `partial`'s prompt. After the last
        chunk the sequence becomes a new row and its last-position logits
        ([1, vocab]) are returned; None before."""
        first = partial.done
        last = min(len(partial.prompt), first + max(1, tokens))
        ids = torch.tensor([partial.prompt[first:last]], device=self._device)
        mask = torch.ones((1, last), dtype=torch.long, device=self._device)
        positions = torch.arange(first, last, device=self._device)[None]
        out = self._forward(ids, mask, positions, partial.cache)
        partial.cache, partial.done = out.cache, last
        if partial.remaining:
            return None
        self._merge(out.cache, mask.bool(), torch.tensor([last], device=self._device))
        partial.cache = None
        return out.logits[:, -1]

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """One decode step: one token per row in; next-token logits out."""
        assert self._mask is not None and self._positions is not None
        if self._end == self._mask.shape[1]:
            self._relayout(self._rows, 0)
        rows, end = self._rows, self._end
        self._mask[:rows, end] = True
        mask = self._mask[:rows, None, None, self._start : end + 1]
        ids = torch.tensor(tokens, device=self._device)[:, None]
        out = self._forward(ids, mask, self._positions[:rows, None], self._cache)
        self._end += 1
        self._positions[:rows] += 1
        return out.logits[:, -1]

    def keep(self, rows: Sequence[int]) -> list[int]:
        """Keep only `rows` and free the others' slots at once. Returns the kept
        rows (old indices) in their new order: a survivor past the end of the
        shrunken batch moves into a freed slot below it, so a leave copies one
        row per row that left instead of every row after it (order-preserving
        compaction was ~9% of a mixed-length run, bench/streaming.py)."""
        if not rows:
            self._free()
            return []
        count, kept = self._rows, len(rows)
        survivors = set(rows)
        order = list(range(kept))
        if kept == count:
            return order
        assert self._mask is not None and self._positions is not None
        holes = [i for i in range(kept) if i not in survivors]
        movers = [i for i in range(kept, count) if i in survivors]
        start, end = self._start, self._end
        if movers:
            dst = torch.tensor(holes, dtype=torch.long, device=self._device)
            src = torch.tensor(movers, dtype=torch.long, device=self._device)
            for tensor in (*self._keys, *self._values):
                region = tensor[:, :, start:end]
                region[dst] = region[src]
            self._mask[dst, start:end] = self._mask[src, start:end]
            self._positions[dst] = self._positions[src]
            for hole, mover in zip(holes, movers, strict=True):
                order[hole] = mover
        self._mask[kept:count] = False
        self._rows = kept
        used = self._mask[:kept, start:end].any(dim=0).nonzero()
        self._start += int(used[0]) if len(used) else 0
        return order

    def _free(self) -> None:
        self._keys, self._values = [], []
        self._mask = self._positions = self._cache = None
        self._rows = self._start = self._end = 0

    def _merge(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Write a prefilled batch's cache in as new rows, right-aligned at `end`."""
        joining, width = int(mask.shape[0]), int(mask.shape[1])
        layers = cache.layers
        if self._mask is None:
            self._allocate(layers[0].keys, len(layers), joining, width + _SLACK)
            self._start = self._end = width
        assert self._mask is not None and self._positions is not None
        rows = self._rows
        if rows + joining > self._mask.shape[0] or self._end < width:
            self._relayout(rows + joining, width)
        first = self._end - width
        for mine, theirs in zip(self._keys, layers, strict=True):
            mine[rows : rows + joining, :, first : self._end] = theirs.keys
        for mine, theirs in zip(self._values, layers, strict=True):
            mine[rows : rows + joining, :, first : self._end] = theirs.values
        self._mask[rows : rows + joining, first : self._end] = mask
        self._positions[rows : rows + joining] = positions
        self._rows = rows + joining
        self._start = min(self._start, first)

    def _allocate(self, like: torch.Tensor, layers: int, rows: int, cols: int) -> None:
        row_cap = -(-rows // _ROW_QUANTUM) * _ROW_QUANTUM
        shape = (row_cap, like.shape[1], cols, like.shape[3])
        self._keys = [like.new_zeros(shape) for _ in range(layers)]
        self._values = [like.new_zeros(shape) for _ in range(layers)]
        self._mask = torch.zeros((row_cap, cols), dtype=torch.bool, device=like.device)
        self._positions = torch.zeros(row_cap, dtype=torch.long, device=like.device)
        self._cache = Cache(layers=[_SlabLayer(self, i) for i in range(layers)])

    def _relayout(self, rows: int, left: int) -> None:
        """Move the used region into a new slab with room for `rows` rows, at
        least `left` columns left of `end`, and `_SLACK` free columns after."""
        assert self._mask is not None and self._positions is not None
        count, start, end = self._rows, self._start, self._end
        width = end - start
        offset = max(left - width, 0)  # free columns before the region
        keys, values, mask, positions = self._keys, self._values, self._mask, self._positions
        self._allocate(keys[0], len(keys), max(rows, count), offset + width + _SLACK)
        for new, old in zip((*self._keys, *self._values), (*keys, *values), strict=True):
            new[:count, :, offset : offset + width] = old[:count, :, start:end]
        self._mask[:count, offset : offset + width] = mask[:count, start:end]
        self._positions[:count] = positions[:count]
        self._start, self._end = offset, offset + width
