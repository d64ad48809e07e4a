"""Word vectors as initial parameters: a GPT-2/BERT job's token-embedding rows
for tokens that are words of a registered word-embedding version.

Subword vocabularies and word vocabularies overlap only where a token is a
whole word. Each token is turned back into its text by the tokenizer itself
(byte-level BPE stores bytes as stand-in characters and marks a leading space
with "Ġ"), stripped, and looked up; a WordPiece continuation ("##...") is not a
word and is skipped. The vectors are cut or zero-padded to the
model's hidden size, then scaled so their spread matches the freshly initialised
rows (word2vec vectors are an order of magnitude larger than GPT-2's 0.02): the
rest of the network sees inputs of the size it was initialised for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gensim.models import KeyedVectors
from transformers import PreTrainedModel

from services.runtime.word_vector_files import read_vectors


def load_vectors(directory: Path) -> KeyedVectors:
    return read_vectors(directory, "initial_word_embeddings")


def token_word(tokenizer: Any, token: str) -> str | None:
    """The word a vocabulary entry stands for, or None for a word piece."""
    if token.startswith("##") or token in tokenizer.all_special_tokens:
        return None
    return tokenizer.convert_tokens_to_string([token]).strip() or None


@torch.no_grad()
def initialise_rows(model: PreTrainedModel, tokenizer: Any, vectors: KeyedVectors) -> int:
    """Copy the vectors of the words among `tokenizer`'s tokens into the model's
    input embeddings; the number of rows set."""
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding)
    weight = embeddings.weight
    hidden = int(weight.shape[1])
    rows, found = [], []
    for token, index in tokenizer.get_vocab().items():
        word = token_word(tokenizer, token)
        if word is not None and word in vectors.key_to_index and index < weight.shape[0]:
            rows.append(index)
            found.append(vectors[word][:hidden])
    if not rows:
        return 0
    copied = torch.from_numpy(np.stack(found)).float()
    copied = (copied - copied.mean()) / (copied.std() + 1e-12) * float(weight.std())
    values = torch.zeros(len(rows), hidden)
    values[:, : copied.shape[1]] = copied
    weight[torch.tensor(rows)] = values.to(weight.dtype)
    return len(rows)
