"""The word-vector artifact format, written by the trainer and read by
inference and by jobs that start from word vectors.

An artifact is a directory with `vectors.txt` (or `vectors.bin`) in the
word2vec format gensim reads and writes, and `manifest.json` saying which
file, which family and the vector size. gensim takes most of a second to
import, so only word-vector code imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gensim.models import KeyedVectors

from lattice.errors import FailedPrecondition

MANIFEST = "manifest.json"


def write_vectors(
    vectors: KeyedVectors, directory: Path, family: str, binary: bool, extra: dict[str, Any]
) -> Path:
    """Write the vectors and the manifest into `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = "vectors.bin" if binary else "vectors.txt"
    vectors.save_word2vec_format(str(directory / name), binary=binary)
    manifest = {
        "format": "word2vec",
        "file": name,
        "binary": binary,
        "family": family,
        "dimensions": int(vectors.vector_size),
        "vocab_size": len(vectors.index_to_key),
        **extra,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return directory


def read_vectors(directory: Path, name: str) -> KeyedVectors:
    """The vectors of the artifact in `directory`; FailedPrecondition naming
    `name` (the model or version) when it is not a word-vector artifact."""
    if not (directory / MANIFEST).is_file():
        raise FailedPrecondition(f"{name}: artifact has no {MANIFEST}")
    manifest = json.loads((directory / MANIFEST).read_text())
    return KeyedVectors.load_word2vec_format(
        str(directory / manifest["file"]), binary=bool(manifest.get("binary"))
    )
