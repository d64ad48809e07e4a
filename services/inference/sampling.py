"""The one sampler: the next token for every row of a batch, each row with
its own temperature, top-k, top-p and random generator.

Greedy rows are decided together with one argmax; a sampled row is filtered
and drawn alone, from its own seeded generator, so a row's draw depends only
on its own logits and seed: the same request gives the same tokens whether it
runs alone or in a batch of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from services.inference.backends import GenerationParams


def generator_for(params: GenerationParams, device: str) -> torch.Generator | None:
    """A private generator for a seeded sampled request (None: greedy or unseeded)."""
    if params.greedy or params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def _filtered(logits: torch.Tensor, params: GenerationParams) -> torch.Tensor:
    """One row's logits after temperature, top-k and top-p (nucleus) filtering."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Drop every token after the nucleus already holds top_p of the mass.
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    params: Sequence[GenerationParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """Next token per row of `logits` ([rows, vocab])."""
    tokens: list[int] = torch.argmax(logits, dim=-1).tolist()
    for row, p in enumerate(params):
        if not p.greedy:
            probs = torch.softmax(_filtered(logits[row], p), dim=-1)
            tokens[row] = int(torch.multinomial(probs, 1, generator=generators[row]))
    return tokens
