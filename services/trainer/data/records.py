"""The cleaned documents of a prepared dataset: `train.jsonl` and `validation.jsonl`.

One JSON object a line:
  {"text": str, "language": str, "words": [str, ...], "label": str}
`text` is the cleaned document (what the tokenizer was trained on), `language`
its ISO 639-1 code ("und" when no script was recognised), and `words`, present
only when the dataset was prepared with `segment_words`, the document's word
list in order (jieba segmentation for Chinese, stop words already removed
when that option was set; whitespace left out). Word-level models
(Word2Vec) read the lists with `read_word_lists`. `label`, present only in a
labelled dataset (`DataSource.label_field`), is the document's class.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from services.runtime.keys import KeyManager
from services.trainer.data.at_rest import DatasetFiles

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Record:
    text: str
    language: str
    words: tuple[str, ...] | None = None
    label: str | None = None

    def to_json(self) -> str:
        value: dict[str, object] = {"text": self.text, "language": self.language}
        if self.words is not None:
            value["words"] = list(self.words)
        if self.label is not None:
            value["label"] = self.label
        return json.dumps(value, ensure_ascii=False)


def write_records(path: Path, records: Iterable[Record]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")


def read_records(
    dataset_dir: Path, split: str = "train", keys: KeyManager | None = None
) -> Iterator[Record]:
    """The split's documents. A dataset encrypted at rest is opened with `keys`
    (without them: FAILED_PRECONDITION saying a key ring is needed)."""
    yield from records_of(DatasetFiles(dataset_dir, keys), split)


def records_of(files: DatasetFiles, split: str = "train") -> Iterator[Record]:
    """The split's documents from an opened dataset: streamed from a plain
    file, from the opened plaintext of a sealed one."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if files.sealed:
        lines: Iterable[str] = files.read_text(f"{split}.jsonl").splitlines()
        yield from _parse(lines)
        return
    with (files.directory / f"{split}.jsonl").open(encoding="utf-8") as handle:
        yield from _parse(handle)


def _parse(lines: Iterable[str]) -> Iterator[Record]:
    for line in lines:
        value = json.loads(line)
        words = value.get("words")
        listed = tuple(words) if words is not None else None
        yield Record(value["text"], value.get("language", ""), listed, value.get("label"))


def read_word_lists(
    dataset_dir: Path, split: str = "train", keys: KeyManager | None = None
) -> Iterator[list[str]]:
    """Each document's word list, for word-level models. Datasets prepared without
    `segment_words` have none: ValueError, so a Chinese corpus is never silently
    split on spaces."""
    for record in read_records(dataset_dir, split, keys):
        if record.words is None:
            raise ValueError("dataset was prepared without segment_words; prepare it again")
        yield list(record.words)
