"""The job's process layout: which ranks hold copies of the same data (data
parallel) and which split one model between them (tensor parallel).

Data-dependent choices (which blocks a rank reads, dropout seeds) key on the
data-parallel coordinate, so every rank of one tensor-parallel group sees the
same batch and draws the same dropout mask on replicated activations.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from lattice.v1 import trainer_pb2

TP_STRATEGIES = (
    trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL,
    trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID,
)


@dataclasses.dataclass
class Layout:
    dp_rank: int
    dp_size: int
    #: The tensor-parallel sub-mesh, None without tensor parallelism.
    tp_mesh: DeviceMesh | None = None
    #: The data-parallel group under HYBRID (gradients are averaged over it).
    dp_group: dist.ProcessGroup | None = None

    @property
    def tp_size(self) -> int:
        return self.tp_mesh.size() if self.tp_mesh is not None else 1


def layout(
    config: trainer_pb2.DistributedConfig, rank: int, world: int, device: torch.device
) -> Layout:
    if config.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL:
        return Layout(0, 1)  # every stage sees the same batch
    if config.strategy not in TP_STRATEGIES:
        return Layout(rank, world)
    tp = config.tensor_parallel_size or world
    dp = world // tp
    mesh = init_device_mesh(device.type, (dp, tp), mesh_dim_names=("dp", "tp"))
    return Layout(
        dp_rank=mesh["dp"].get_local_rank(),
        dp_size=dp,
        tp_mesh=mesh["tp"],
        dp_group=mesh["dp"].get_group() if dp > 1 else None,
    )
