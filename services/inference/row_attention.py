"""Decode-step attention over groups of rows, each group over its own columns.

The KV slab (`kv_batch`) gives every row the same columns: the oldest
running sequence's span. A sequence that joined late attends over all of it,
padding included, and on a small model attention is a large part of a step:
on bench/streaming.py's model, 32 rows over 256 columns cost about 0.15 µs
per row and column, as much as the rest of the step at 120 columns. Rows of
different ages are therefore split into a few groups (`plan_groups`), and
each group attends over the columns from its own oldest row on: one small
`scaled_dot_product_attention` call per group instead of one padded call.
Everything else in the forward pass (projections, MLP, LM head) still runs
once over all rows.

It plugs in through transformers' public `AttentionInterface`; a call without
groups (prefill, or a model that cannot switch its attention) is the stock
SDPA attention with the same mask, so results never depend on the grouping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

#: The name the attention is registered under.
NAME = "lattice_row_groups"

#: One group: rows [first, last) attend over the used columns from `skip` on.
Group = tuple[int, int, int]


def default_group_cost(device: str) -> int | None:
    """One more SDPA call per layer, in row-columns of attention it must save
    to pay for itself: measured on CPU with bench/streaming.py's model (32
    rows of spread ages: 128 made 6 groups and was no faster than one, 512
    made 3 and saved 10% of the step). None on a GPU, where the grouping is
    not measured yet: one padded call."""
    return None if device.startswith("cuda") else 512


def row_group_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    row_groups: Sequence[Group] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA, one call per row group (one call in all when there are none)."""
    if not row_groups or (len(row_groups) == 1 and row_groups[0][2] == 0):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    for first, last, skip in row_groups:
        mask = None if attention_mask is None else attention_mask[first:last, :, :, skip:]
        out, _ = sdpa_attention_forward(
            module,
            query[first:last],
            key[first:last, :, skip:],
            value[first:last, :, skip:],
            mask,
            **kwargs,
        )
        outputs.append(out)
    return torch.cat(outputs), None


def install(model: Any) -> bool:
    """Switch `model` to the grouped attention; False when it cannot switch
    (it then keeps its own attention, and groups are simply not used)."""
    AttentionInterface.register(NAME, row_group_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # prefill: the usual causal mask
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    model.set_attn_implementation(NAME)
    return bool(model.config._attn_implementation == NAME)


def plan_groups(firsts: Sequence[int], group_cost: int) -> list[Group]:
    """Split rows (in batch order) into contiguous groups minimising
    columns attended + `group_cost` per group. `firsts[i]` is row i's first
    used column; a group attends from its smallest one on. Exact dynamic
    programming, O(rows²): run when rows join or leave, not every step."""
    count = len(firsts)
    if count == 0:
        return []
    # best[j]: the most columns skipped (net of group costs) by rows [0, j).
    best = [0] * (count + 1)
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        low = firsts[j - 1]
        best[j], cut[j] = best[j - 1] + low - group_cost, j - 1
        for i in range(j - 2, -1, -1):
            low = min(low, firsts[i])
            gain = best[i] + (j - i) * low - group_cost
            if gain > best[j]:
                best[j], cut[j] = gain, i
    groups: list[Group] = []
    j = count
    while j:
        i = cut[j]
        groups.append((i, j, min(firsts[i:j])))
        j = i
    return groups[::-1]
