"""Tensor-parallel plan for GPT-2 (Megatron-style, on DTensor).

Per block: the fused q/k/v projection and the MLP's first layer are split
column-wise (each rank owns whole attention heads and a slice of the MLP), the
attention output projection and the MLP's second layer row-wise, so a block
costs one all-reduce forward and one backward. Layer norms, position
embeddings and the token embedding stay replicated: GPT-2 ties the token
embedding to the LM head, and splitting a tied weight two ways would untie it.

Hugging Face's GPT-2 uses `Conv1D` (weight [in, out]) and fuses q, k and v into
one output; `ColwiseParallel` knows `nn.Linear`. `prepare` swaps each Conv1D for
the equivalent Linear and reorders the fused output so a contiguous column
shard holds [q_r, k_r, v_r] of rank r's heads; `consolidate` undoes both on a
full state dict, so the exported model is the plain GPT-2 inference loads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

#: The plan, per block (module path relative to `transformer.h.N`).
BLOCK_PLAN = {
    "attn.c_attn": ColwiseParallel(),
    "attn.c_proj": RowwiseParallel(),
    "mlp.c_fc": ColwiseParallel(),
    "mlp.c_proj": RowwiseParallel(),
}
_FUSED_QKV = ".attn.c_attn."
_CONV_NAMES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _qkv_order(hidden: int, tp: int) -> torch.Tensor:
    """Output index order that puts [q_r, k_r, v_r] contiguously for each rank r."""
    local = hidden // tp
    index = [
        part * hidden + r * local + i for r in range(tp) for part in range(3) for i in range(local)
    ]
    return torch.tensor(index)


def _linear(conv: Conv1D, order: torch.Tensor | None) -> nn.Linear:
    weight, bias = conv.weight.detach().t(), conv.bias.detach()  # Linear keeps [out, in]
    if order is not None:
        weight, bias = weight[order], bias[order]
    linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear


def prepare(model: PreTrainedModel, mesh: DeviceMesh) -> PreTrainedModel:
    """Swap in Linears, split every block over `mesh`, set the local head counts."""
    tp = mesh.size()
    hidden = model.config.hidden_size
    order = _qkv_order(hidden, tp)
    transformer: Any = model.transformer
    for block in transformer.h:
        for name in _CONV_NAMES:
            parent_name, child = name.split(".")
            parent = getattr(block, parent_name)
            conv = getattr(parent, child)
            setattr(parent, child, _linear(conv, order if name == "attn.c_attn" else None))
        block.attn.split_size = hidden // tp  # q/k/v of the local heads
        block.attn.num_heads = model.config.num_attention_heads // tp
        block.attn.embed_dim = hidden // tp
        parallelize_module(block, mesh, BLOCK_PLAN)
    return model


def consolidate(state: dict[str, torch.Tensor], hidden: int, tp: int) -> dict[str, torch.Tensor]:
    """A full (gathered) TP state dict back in Hugging Face GPT-2's layout."""
    inverse = torch.argsort(_qkv_order(hidden, tp))
    out = {}
    for key, value in state.items():
        if any(f".{name}." in key for name in _CONV_NAMES):
            if _FUSED_QKV in key:
                value = value[inverse]
            if key.endswith(".weight"):
                value = value.t().contiguous()
        out[key] = value
    return out
