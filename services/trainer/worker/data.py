"""Token blocks and a deterministic order: batch k of step s depends only on
(seed, epoch, rank, world size), so a resumed run sees exactly the batches an
uninterrupted one would have."""

from __future__ import annotations

import json

import numpy as np
import torch

from services.trainer.data.at_rest import DatasetFiles


class TokenBlocks:
    """A token stream cut into non-overlapping blocks of `length` tokens."""

    def __init__(self, data: bytes, dtype: str, length: int) -> None:
        tokens = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
        self.length = length
        self.count = len(tokens) // length
        blocks = tokens[: self.count * length].astype(np.int64).reshape(self.count, length)
        self.blocks = torch.from_numpy(blocks)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        return self.blocks.index_select(0, indices)


def load_splits(dataset: DatasetFiles, length: int) -> tuple[TokenBlocks, TokenBlocks, dict]:
    """The token streams of a dataset (decrypted in memory when it is sealed at rest)."""
    meta = json.loads(dataset.read_text("meta.json"))
    train = TokenBlocks(dataset.read_bytes("train.bin"), meta["dtype"], length)
    validation = TokenBlocks(dataset.read_bytes("validation.bin"), meta["dtype"], length)
    return train, validation, meta


class DeterministicOrder:
    """Which blocks rank `rank` uses for each optimiser step."""

    def __init__(
        self, blocks: int, seed: int, rank: int, world: int, batch: int, accumulation: int
    ) -> None:
        self.blocks, self.seed, self.rank, self.world = blocks, seed, rank, world
        self.batch, self.accumulation = batch, accumulation
        self.per_rank = blocks // world
        self.steps_per_epoch = self.per_rank // (batch * accumulation)
        self._epoch = -1
        self._mine = torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            permutation = torch.randperm(self.blocks, generator=generator)
            self._mine = permutation[self.rank : self.per_rank * self.world : self.world]
            self._epoch = epoch
        return self._mine

    def micro_batches(self, step: int) -> tuple[int, list[torch.Tensor]]:
        """(epoch, block indices of each micro-batch) for optimiser step `step` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        size = self.batch
        first = position * self.accumulation
        return epoch, [
            order[(first + m) * size : (first + m + 1) * size] for m in range(self.accumulation)
        ]


def mask_tokens(
    inputs: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: list[int],
    probability: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: 15% of ordinary tokens predicted; of those 80% [MASK], 10% random,
    10% unchanged. Returns (inputs, labels with -100 where nothing is predicted)."""
    labels = inputs.clone()
    chance = torch.full(inputs.shape, probability)
    special = torch.isin(inputs, torch.tensor(special_ids, dtype=inputs.dtype))
    chance.masked_fill_(special, 0.0)
    selected = torch.bernoulli(chance, generator=generator).bool()
    labels[~selected] = -100
    inputs = inputs.clone()
    replace = torch.bernoulli(torch.full(inputs.shape, 0.8), generator=generator).bool() & selected
    inputs[replace] = mask_id
    randomise = (
        torch.bernoulli(torch.full(inputs.shape, 0.5), generator=generator).bool()
        & selected
        & ~replace
    )
    inputs[randomise] = torch.randint(
        vocab_size, inputs.shape, generator=generator, dtype=inputs.dtype
    )[randomise]
    return inputs, labels
