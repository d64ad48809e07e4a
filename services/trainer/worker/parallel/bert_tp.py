"""Tensor-parallel plan for BERT (Megatron-style, on DTensor), like GPT-2's.

Per encoder layer: query, key and value and the feed-forward's first layer are
split column-wise (each rank owns whole attention heads and a slice of the
intermediate layer), the attention output and the feed-forward's second layer
row-wise: one all-reduce per layer forward and one backward. Embeddings, layer
norms and the MLM head stay replicated (the head's decoder is tied to the word
embeddings). BERT's projections are already `nn.Linear` with q, k and v apart,
so a contiguous column shard is a run of whole heads and the gathered state
dict is plain BertForMaskedLM: nothing to undo at export.
"""

from __future__ import annotations

from typing import Any

from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)
from transformers import PreTrainedModel

#: The plan, per layer (module path relative to `bert.encoder.layer.N`).
LAYER_PLAN = {
    "attention.self.query": ColwiseParallel(),
    "attention.self.key": ColwiseParallel(),
    "attention.self.value": ColwiseParallel(),
    "attention.output.dense": RowwiseParallel(),
    "intermediate.dense": ColwiseParallel(),
    "output.dense": RowwiseParallel(),
}


def prepare(model: PreTrainedModel, mesh: DeviceMesh) -> PreTrainedModel:
    """Split every layer over `mesh` and set the local head counts."""
    tp = mesh.size()
    bert: Any = model.bert
    for layer in bert.encoder.layer:
        attention = layer.attention.self
        attention.num_attention_heads //= tp
        attention.all_head_size //= tp
        parallelize_module(layer, mesh, LAYER_PLAN)
    return model
