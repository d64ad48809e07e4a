"""The running sequences' KV cache, kept as one left-padded batch.

Each row is one sequence; `mask` marks its real positions. A decode step
feeds one token per row; new sequences are prefilled as their own small batch
and then merged in (the shorter side padded on the left); a row that leaves
is dropped with an index-select, and columns that became padding for every
row are trimmed, so memory follows the sequences actually running.

Works on `transformers`' `DynamicCache` through its public layers
(`layers[i].keys` / `.values`, `batch_select_indices`); tests pin that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pads)


class KVBatch:
    """Prefill, step, merge and shrink a batch of sequences on one causal LM."""

    def __init__(self, model: Any, device: str, pad_id: int) -> None:
        self._model = model
        self._device = device
        self._pad = pad_id
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [rows, width], 1 = real token
        self._positions: torch.Tensor | None = None  # [rows], next position per row

    @property
    def rows(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[0])

    @property
    def width(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[1])

    @property
    def kv_tokens(self) -> int:
        """Cache slots held (rows x width, padding included)."""
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
        self._merge(out.cache, mask, mask.sum(-1))
        return out.logits[:, -1]

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """One decode step: one token per row in; next-token logits out."""
        assert self._mask is not None and self._positions is not None
        ids = torch.tensor(tokens, device=self._device)[:, None]
        mask = torch.cat([self._mask, self._mask.new_ones((len(tokens), 1))], dim=1)
        out = self._forward(ids, mask, self._positions[:, None], self._cache)
        self._cache, self._mask = out.cache, mask
        self._positions = self._positions + 1
        return out.logits[:, -1]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in this order); frees the others' memory now."""
        if not rows:
            self._cache = self._mask = self._positions = None
            return
        if len(rows) == self.rows and list(rows) == list(range(self.rows)):
            return
        assert self._mask is not None and self._positions is not None
        index = torch.tensor(list(rows), device=self._device)
        self._cache.batch_select_indices(index)
        self._mask, self._positions = self._mask[index], self._positions[index]
        used = self._mask.any(dim=0).nonzero()
        cut = int(used[0]) if len(used) else 0
        if cut:
            self._mask = self._mask[:, cut:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, cut:].contiguous()
                layer.values = layer.values[:, :, cut:].contiguous()

    def _merge(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        if self._cache is None or self._mask is None or self._positions is None:
            self._cache, self._mask, self._positions = cache, mask, positions
            return
        width = max(self.width, int(mask.shape[1]))
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat(
                [_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)]
            )
            mine.values = torch.cat(
                [_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)]
            )
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._positions = torch.cat([self._positions, positions])
