"""Gradient reduction, norm and clipping for tensor-parallel models.

`clip_grad_norm_` wants all parameters to be DTensors or none; a TP model has
both (split weights are DTensors, layer norms and embeddings plain replicated
tensors). The norm here counts each split weight's shards once (summed over the
TP group) and each replicated tensor once (not per rank), which is the norm of
the unsplit model.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from services.trainer.worker.parallel.mesh import Layout


def is_sharded(param: torch.Tensor) -> bool:
    return isinstance(param, DTensor) and any(isinstance(p, Shard) for p in param.placements)


def local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def average_over_data_parallel(params: list[torch.nn.Parameter], layout: Layout) -> None:
    """HYBRID: average gradients over the data-parallel replicas (one flat all-reduce)."""
    if layout.dp_group is None:
        return
    grads = [local(p.grad) for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=layout.dp_group)
    flat /= layout.dp_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def clip_and_norm(params: list[torch.nn.Parameter], max_norm: float, layout: Layout) -> float:
    """The global gradient norm (before clipping); clips in place when max_norm > 0."""
    pairs = [(p, p.grad) for p in params if p.grad is not None]
    sharded = [local(g) for p, g in pairs if is_sharded(p)]
    replicated = [local(g) for p, g in pairs if not is_sharded(p)]
    squares = torch.zeros(2, dtype=torch.float64, device=(sharded + replicated)[0].device)
    if sharded:
        squares[0] = torch.stack(torch._foreach_norm(sharded, 2)).double().square().sum()
    if replicated:
        squares[1] = torch.stack(torch._foreach_norm(replicated, 2)).double().square().sum()
    assert layout.tp_mesh is not None
    sums = squares[0:1].clone()
    dist.all_reduce(sums, group=layout.tp_mesh.get_group())
    total = math.sqrt(float(sums[0] + squares[1]))
    if max_norm > 0 and math.isfinite(total) and total > max_norm:
        torch._foreach_mul_(sharded + replicated, max_norm / (total + 1e-6))
    return total
