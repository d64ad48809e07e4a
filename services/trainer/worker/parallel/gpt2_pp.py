"""Pipeline-parallel plan for GPT-2 (`torch.distributed.pipelining`, GPipe or 1F1B).

Rank r holds a contiguous run of transformer blocks; the first stage also holds
the embeddings, the last the final layer norm and the LM head. A step cuts the
batch into micro-batches that flow forward through the stages, then backward;
gradients are averaged over micro-batches by the schedule. GPipe runs every
forward before any backward (all micro-batches' activations live at once);
1F1B alternates one forward and one backward once the pipeline is full, so a
stage holds at most (stages - index) micro-batches' activations. Both compute
the same gradients.

GPT-2 ties the LM head to the token embedding, and with stages those live on
different ranks: the last stage keeps its own copy, and after each backward the
two gradients are summed between the first and last stage (Megatron's
embedding all-reduce), so both copies take the same update and stay equal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from transformers import PreTrainedModel

from lattice.v1 import trainer_pb2

SCHEDULES: dict[int, Any] = {
    trainer_pb2.PIPELINE_SCHEDULE_GPIPE: ScheduleGPipe,
    trainer_pb2.PIPELINE_SCHEDULE_1F1B: Schedule1F1B,
}


def stage_blocks(layers: int, stages: int, index: int) -> range:
    """Blocks of stage `index`: as even as possible, earlier stages one more."""
    base, extra = divmod(layers, stages)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


class Gpt2Stage(nn.Module):
    """One stage of a GPT-2: (embeddings) -> blocks -> (final norm, LM head)."""

    #: The last stage's copy of the tied weight (counted once, in the first stage).
    tied_copy = "lm_head.weight"

    def __init__(self, model: PreTrainedModel, index: int, stages: int) -> None:
        super().__init__()
        t: Any = model.transformer
        self.first, self.last = index == 0, index == stages - 1
        if self.first:
            self.wte, self.wpe, self.drop = t.wte, t.wpe, t.drop
        blocks = stage_blocks(len(t.h), stages, index)
        # Keys keep the block's index, so checkpoint keys are unique across stages.
        self.h = nn.ModuleDict({str(i): t.h[i] for i in blocks})
        if self.last:
            self.ln_f = t.ln_f
            self.lm_head = nn.Linear(t.wte.embedding_dim, t.wte.num_embeddings, bias=False)
            with torch.no_grad():
                self.lm_head.weight.copy_(t.wte.weight)

    wte: Any
    wpe: Any
    drop: Any
    ln_f: Any
    lm_head: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            positions = torch.arange(x.shape[1], device=x.device)
            x = self.drop(self.wte(x) + self.wpe(positions))
        for block in self.h.values():
            x = block(x)
        if self.last:
            x = self.lm_head(self.ln_f(x))
        return x

    def tied(self) -> torch.Tensor | None:
        """This stage's copy of the tied embedding / LM head weight."""
        if self.first:
            return self.wte.weight
        if self.last:
            return self.lm_head.weight
        return None

    def hf_state(self) -> dict[str, torch.Tensor]:
        """This stage's weights under Hugging Face GPT-2's names (CPU)."""
        return {
            f"transformer.{k}": v.detach().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("lm_head.")
        }


def causal_lm_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hugging Face's GPT-2 loss: predict token t+1 from tokens up to t."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), target[:, 1:].reshape(-1))


class Pipeline:
    """Drives one rank's stage (a GPT-2 or BERT stage module: `first`, `last`,
    `tied()`, `tied_copy`, `hf_state()`) through a GPipe or 1F1B schedule.
    `loss_fn(output, target)` scores one micro-batch; one with a `begin(target)`
    hears each whole batch's target first."""

    def __init__(
        self,
        stage_module: Any,
        rank: int,
        world: int,
        micro_batches: int,
        device: torch.device,
        schedule: int = trainer_pb2.PIPELINE_SCHEDULE_GPIPE,
        loss_fn: Any = causal_lm_loss,
    ) -> None:
        self.rank, self.world = rank, world
        self.stage_module = stage_module.to(device)
        self.loss_fn = loss_fn
        stage = PipelineStage(self.stage_module, rank, world, device)
        self.schedule = SCHEDULES[schedule](stage, micro_batches, loss_fn=loss_fn)
        # Every rank joins group creation; only the first and last stage use it.
        self.tie_group = dist.new_group([0, world - 1])
        self.micro_batches = micro_batches

    def _run(self, inputs: torch.Tensor, target: torch.Tensor, train: bool) -> torch.Tensor:
        losses: list[torch.Tensor] = []
        run = self.schedule.step if train else self.schedule.eval
        if hasattr(self.loss_fn, "begin"):
            self.loss_fn.begin(target)
        if self.stage_module.first:
            run(inputs)
        elif self.stage_module.last:
            run(target=target, losses=losses)
        else:
            run()
        loss = torch.stack(losses).mean().detach() if losses else torch.zeros(())
        dist.broadcast(loss, src=self.world - 1)  # every rank reports the same loss
        return loss

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Forward and backward over all micro-batches; returns the mean loss."""
        loss = self._run(inputs, target, train=True)
        tied = self.stage_module.tied()
        if tied is not None and tied.grad is not None:
            dist.all_reduce(tied.grad, group=self.tie_group)
        return loss

    @torch.no_grad()
    def eval_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._run(inputs, target, train=False)

    def clip_and_norm(self, max_norm: float) -> float:
        """Global gradient norm over all stages (the tied weight counted once)."""
        module = self.stage_module
        counted = [
            p.grad
            for name, p in module.named_parameters()
            if p.grad is not None and name != module.tied_copy
        ]
        squares = torch.zeros((), dtype=torch.float64)
        if counted:
            squares += torch.stack(torch._foreach_norm(counted, 2)).double().square().sum()
        dist.all_reduce(squares)
        total = float(squares.sqrt())
        if max_norm > 0 and total == total and total > max_norm:  # not NaN
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            torch._foreach_mul_(grads, max_norm / (total + 1e-6))
        return total

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """Collective: the whole model's Hugging Face state on rank 0, None elsewhere."""
        parts: list[dict | None] = [None] * self.world if self.rank == 0 else []
        dist.gather_object(self.stage_module.hf_state(), parts if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return None
        state: dict[str, torch.Tensor] = {}
        for part in parts:
            assert part is not None
            state.update(part)
        return state
