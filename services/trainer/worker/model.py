"""Build the model a job asks for and wrap it for DDP or FSDP."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from lattice.v1 import trainer_pb2


def build_model(
    spec: trainer_pb2.JobSpec, vocab_size: int, special: dict, base_dir: Path | None
) -> PreTrainedModel:
    """A fresh model from the architecture, or the base version's weights."""
    causal = spec.family == trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM
    if base_dir is not None:
        loader = AutoModelForCausalLM if causal else AutoModelForMaskedLM
        return loader.from_pretrained(base_dir)
    arch = spec.architecture
    dropout = arch.dropout if arch.HasField("dropout") else 0.1
    if causal:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=arch.max_positions,
            n_embd=arch.hidden_size,
            n_layer=arch.num_layers,
            n_head=arch.num_heads,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=special.get("eos"),
            eos_token_id=special.get("eos"),
            pad_token_id=special.get("eos"),
        )
        return GPT2LMHeadModel(config)
    bert_config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        intermediate_size=4 * arch.hidden_size,
        max_position_embeddings=arch.max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=special.get("pad", 0),
    )
    return BertForMaskedLM(bert_config)


def blocks_of(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The transformer blocks (FSDP shards each as its own unit)."""
    path = "transformer.h" if hasattr(model, "transformer") else "bert.encoder.layer"
    blocks = model.get_submodule(path)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise TypeError(f"{type(model).__name__}.{path} is not a list of blocks")
    return list(blocks)


def wrap(
    model: PreTrainedModel, strategy: int, world: int, device: torch.device
) -> torch.nn.Module:
    """DDP or FSDP2 (`fully_shard` per block, then the root); plain when world is 1 and DDP."""
    module: torch.nn.Module = model  # PreTrainedModel.to's functools.wraps typing binds no self
    module.to(device)
    if strategy == trainer_pb2.DISTRIBUTED_STRATEGY_FSDP:
        from torch.distributed.fsdp import fully_shard

        for block in blocks_of(model):
            fully_shard(block)
        fully_shard(model)
        return model
    if world == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"{type(inner).__name__} is not a transformers model")
    return inner
