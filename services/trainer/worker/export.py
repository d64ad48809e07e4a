"""Write the finished model as a Hugging Face directory: model, tokenizer,
generation config (causal LMs) - the same layout the inference service loads."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoTokenizer, GenerationConfig, PreTrainedModel


def export(
    model: PreTrainedModel, state: dict, tokenizer_dir: Path, target: Path, causal: bool
) -> Path:
    """Rank 0 only: `model` is a fresh unwrapped copy; `state` the full weights."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any("lm_head" not in key for key in missing):
        raise RuntimeError(f"export: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    temp = target.with_name(target.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    model.save_pretrained(temp, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(temp)
    if causal:
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=64,
            do_sample=False,
        ).save_pretrained(temp)
    shutil.rmtree(target, ignore_errors=True)
    temp.rename(target)
    return target
