"""Corpora whose answer is known, for the word-embedding families.

Three groups of words; the two nouns of a group ("king"/"queen", "dog"/"cat",
"car"/"truck") occur in exactly the same contexts, and in no context of another
group, so a working model puts each pair next to each other.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GROUPS = {
    ("king", "queen"): (["rules", "governs", "commands"], ["kingdom", "realm", "court", "army"]),
    ("dog", "cat"): (["chases", "eats", "watches"], ["ball", "bone", "mouse", "sofa"]),
    ("car", "truck"): (["drives", "parks", "crosses"], ["road", "garage", "highway", "bridge"]),
}
PAIRS = [pair for pair in GROUPS]
ADVERBS = ["slowly", "today", "again", "often"]


def planted_sentences(count: int = 3000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    sentences = []
    groups = list(GROUPS.items())
    for _ in range(count):
        nouns, (verbs, objects) = rng.choice(groups)
        sentences.append(
            f"the {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(objects)} "
            f"{rng.choice(ADVERBS)}"
        )
    return sentences


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return path


def write_pairs(path: Path) -> Path:
    """gensim's word-pair format: word1 TAB word2 TAB score."""
    rows = [(a, b, 9.0) for a, b in PAIRS]
    rows += [("king", "dog", 1.0), ("queen", "truck", 1.0), ("cat", "car", 1.5)]
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    return path


def write_analogies(path: Path) -> Path:
    """gensim's analogy format: a is to b as c is to d."""
    path.write_text(": planted\nking queen dog cat\ndog cat car truck\nking queen car truck\n")
    return path
