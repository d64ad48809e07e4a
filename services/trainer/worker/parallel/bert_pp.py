"""Pipeline-parallel plan for BERT masked LM (`torch.distributed.pipelining`).

Like GPT-2's (`gpt2_pp`): rank r holds a contiguous run of encoder layers, the
first stage also the embeddings, the last the MLM head. BERT ties the head's
decoder weight to the word embeddings; on the last stage that parameter is
the head's own, and `Pipeline` sums its gradient with the embedding's after
each backward so both copies stay equal.

The loss is the mean over the *batch's* masked tokens, as in one process:
micro-batches hold different numbers of masked tokens, so each scores its sum
divided by the batch's count (times the micro-batch count, which the schedule
divides gradients by again) instead of its own mean.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from services.trainer.worker.parallel.gpt2_pp import stage_blocks

IGNORE = -100  # labels of tokens that are not predicted (data.mask_tokens)


class BertStage(nn.Module):
    """One stage of a BertForMaskedLM: (embeddings) -> layers -> (MLM head)."""

    tied_copy = "cls.predictions.decoder.weight"

    def __init__(self, model: PreTrainedModel, index: int, stages: int) -> None:
        super().__init__()
        bert: Any = model.bert
        self.first, self.last = index == 0, index == stages - 1
        if self.first:
            self.embeddings = bert.embeddings
        layers = stage_blocks(len(bert.encoder.layer), stages, index)
        self.layer = nn.ModuleDict({str(i): bert.encoder.layer[i] for i in layers})
        if self.last:
            self.cls = model.cls

    embeddings: Any
    cls: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.embeddings(input_ids=x)
        for layer in self.layer.values():
            x = layer(x)
        if self.last:
            x = self.cls(x)
        return x

    def tied(self) -> torch.Tensor | None:
        if self.first:
            return self.embeddings.word_embeddings.weight
        if self.last:
            return self.cls.predictions.decoder.weight
        return None

    def hf_state(self) -> dict[str, torch.Tensor]:
        """This stage's weights under Hugging Face BertForMaskedLM's names (CPU)."""
        prefixes = {"embeddings.": "bert.embeddings.", "layer.": "bert.encoder.layer."}
        state = {}
        for key, value in self.state_dict().items():
            for short, full in prefixes.items():
                if key.startswith(short):
                    key = full + key.removeprefix(short)
                    break
            state[key] = value.detach().cpu()
        return state


class MaskedLmLoss:
    """Micro-batch loss whose mean over micro-batches is the batch's masked-LM loss."""

    def __init__(self, micro_batches: int) -> None:
        self.micro_batches = micro_batches
        self.masked = 1

    def begin(self, labels: torch.Tensor) -> None:
        self.masked = max(int((labels != IGNORE).sum()), 1)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        total = F.cross_entropy(
            logits.reshape(-1, vocab).float(),
            labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        return total * (self.micro_batches / self.masked)
