"""The preparation pipeline: sources -> cleaning -> dedupe -> split -> tokenizer -> store.

`DatasetPreparer.prepare(spec)` is synchronous and CPU-bound; the servicer runs
it in a worker thread. Every document is accounted for: documents_in equals
documents_out plus the sum of `dropped`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np

from lattice.errors import InvalidArgument
from lattice.refs import NAME_PATTERN
from lattice.v1 import trainer_pb2
from services.trainer.data import cleaning
from services.trainer.data.decoding import repair_mojibake
from services.trainer.data.dedupe import NearDuplicateIndex, exact_key
from services.trainer.data.labels import check_labels, stratified_split
from services.trainer.data.sources import ReadStats, read_sources, validate_sources
from services.trainer.data.store import DatasetStore
from services.trainer.data.tokenizer import copy_tokenizer, separator_id, train_tokenizer

DEFAULT_VOCAB = 8000
DEFAULT_VALIDATION = 0.1
DEFAULT_NEAR_THRESHOLD = 0.8


def validate_spec(spec: trainer_pb2.DatasetSpec) -> None:
    if not NAME_PATTERN.match(spec.name):
        raise InvalidArgument("spec.name", "required; a lower-case DNS label")
    validate_sources(spec.sources)
    if not 0.0 <= spec.validation_fraction <= 0.5:
        raise InvalidArgument("spec.validation_fraction", "must be within 0..0.5")
    options = spec.cleaning
    if options.max_chars and options.min_chars > options.max_chars:
        raise InvalidArgument("spec.cleaning.min_chars", "must not exceed max_chars")
    if not 0.0 <= options.near_duplicate_threshold <= 1.0:
        raise InvalidArgument("spec.cleaning.near_duplicate_threshold", "must be within 0..1")
    vocab = spec.tokenizer.vocab_size
    if not spec.tokenizer.base_model and vocab and not 300 <= vocab <= 1_000_000:
        raise InvalidArgument("spec.tokenizer.vocab_size", "must be within 300..1000000")


class DatasetPreparer:
    def __init__(self, store: DatasetStore) -> None:
        self.store = store

    def prepare(
        self, spec: trainer_pb2.DatasetSpec, base_dir: Path | None = None
    ) -> trainer_pb2.Dataset:
        """Run the pipeline; `base_dir` is the unpacked base model when the spec reuses
        its tokenizer."""
        validate_spec(spec)
        report = trainer_pb2.DatasetReport()
        documents, labels = self._clean(spec, report)
        labelled = bool(spec.sources[0].label_field)
        if labelled:
            check_labels(labels, report.dropped.get("missing_label", 0), spec.sources[0])
            for label, count in Counter(labels).items():
                report.label_counts[label] = count
            fraction = spec.validation_fraction or DEFAULT_VALIDATION
            train_ids, validation_ids = stratified_split(labels, fraction, spec.seed)
        else:
            train_ids, validation_ids = _split(len(documents), spec)
        train = [documents[i] for i in train_ids]
        validation = [documents[i] for i in validation_ids]
        train_labels = [labels[i] for i in train_ids] if labelled else None
        validation_labels = [labels[i] for i in validation_ids] if labelled else None
        report.train_documents = len(train)
        report.validation_documents = len(validation)
        staging = self.store.staging_dir()
        try:
            self._write(
                staging, spec, train, validation, report, base_dir, train_labels, validation_labels
            )
            dataset = trainer_pb2.Dataset(name=spec.name, spec=spec, report=report)
            return self.store.commit(staging, dataset)
        except BaseException:
            self.store.discard(staging)
            raise

    def _clean(
        self, spec: trainer_pb2.DatasetSpec, report: trainer_pb2.DatasetReport
    ) -> tuple[list[str], list[str]]:
        """The kept documents and their labels (empty strings when unlabelled); a
        duplicate keeps the first occurrence's label."""
        options = spec.cleaning
        stats = ReadStats()
        dropped: Counter[str] = Counter()
        encodings: Counter[str] = Counter()
        seen: set[bytes] = set()
        threshold = options.near_duplicate_threshold or DEFAULT_NEAR_THRESHOLD
        near = NearDuplicateIndex(threshold) if options.near_deduplicate else None
        kept: list[str] = []
        labels: list[str] = []
        for raw in read_sources(spec.sources, stats):
            report.documents_in += 1
            encodings[raw.encoding] += 1
            if raw.problem:
                dropped[raw.problem] += 1
                continue
            text = raw.text
            if options.normalize_unicode:
                text, repaired = repair_mojibake(text)
                report.repaired_documents += int(repaired)
                text = cleaning.normalize_unicode(text)
            if options.strip_markup:
                text = cleaning.strip_markup(text)
            if options.normalize_whitespace:
                text = cleaning.normalize_whitespace(text)
            if options.remove_stop_words:
                text, removed = cleaning.remove_stop_words(text)
                report.stop_words_removed += removed
            reason = _length_problem(text, options)
            if reason:
                dropped[reason] += 1
                continue
            if options.deduplicate:
                key = exact_key(text)
                if key in seen:
                    dropped["duplicate"] += 1
                    continue
                seen.add(key)
            if near is not None and not near.add_if_new(text):
                dropped["near_duplicate"] += 1
                continue
            kept.append(text)
            labels.append(raw.label)
        report.documents_out = len(kept)
        report.invalid_bytes = stats.invalid_bytes
        for reason, count in dropped.items():
            report.dropped[reason] = count
        for encoding, count in encodings.items():
            report.encodings[encoding] = count
        if not kept:
            if dropped.get("missing_label") and spec.sources[0].label_field:
                check_labels([], dropped["missing_label"], spec.sources[0])
            raise InvalidArgument("spec.sources", "no document survived cleaning")
        return kept, labels

    def _write(
        self,
        staging: Path,
        spec: trainer_pb2.DatasetSpec,
        train: list[str],
        validation: list[str],
        report: trainer_pb2.DatasetReport,
        base_dir: Path | None,
        train_labels: list[str] | None = None,
        validation_labels: list[str] | None = None,
    ) -> None:
        tokenizer_dir = staging / "tokenizer"
        if spec.tokenizer.base_model:
            if base_dir is None:
                raise InvalidArgument("spec.tokenizer.base_model", "base model not fetched")
            tokenizer = copy_tokenizer(base_dir, tokenizer_dir)
        else:
            vocab = spec.tokenizer.vocab_size or DEFAULT_VOCAB
            tokenizer = train_tokenizer(spec.tokenizer.kind, train, vocab, tokenizer_dir)
        report.vocab_size = len(tokenizer)
        dtype = np.uint16 if len(tokenizer) < 65536 else np.uint32
        separator = separator_id(tokenizer)
        splits = (("train", train, train_labels), ("validation", validation, validation_labels))
        for name, texts, labels in splits:
            with (staging / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                for i, text in enumerate(texts):
                    record = (
                        {"text": text} if labels is None else {"text": text, "label": labels[i]}
                    )
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            tokens = _tokenize(tokenizer, texts, separator, dtype)
            tokens.astype(np.dtype(dtype).newbyteorder("<")).tofile(staging / f"{name}.bin")
            if name == "train":
                report.train_tokens = len(tokens)
            else:
                report.validation_tokens = len(tokens)
        meta = {
            "dtype": np.dtype(dtype).name,
            "vocab_size": len(tokenizer),
            "separator_id": separator,
            "tokenizer_kind": trainer_pb2.TokenizerKind.Name(spec.tokenizer.kind),
        }
        (staging / "meta.json").write_text(json.dumps(meta, sort_keys=True))


def _length_problem(text: str, options: trainer_pb2.CleaningOptions) -> str:
    if not text.strip():
        return "empty"
    if options.min_chars and len(text) < options.min_chars:
        return "too_short"
    if options.max_chars and len(text) > options.max_chars:
        return "too_long"
    return ""


def _split(size: int, spec: trainer_pb2.DatasetSpec) -> tuple[list[int], list[int]]:
    """Seeded shuffle, then round(n * fraction) documents (>= 1 when n >= 2) to
    validation; returns the (train, validation) indices in document order."""
    fraction = spec.validation_fraction or DEFAULT_VALIDATION
    order = list(range(size))
    random.Random(spec.seed).shuffle(order)
    count = round(size * fraction)
    if size >= 2:
        count = max(1, count)
    count = min(count, size - 1)
    chosen = set(order[:count])
    return [i for i in range(size) if i not in chosen], sorted(chosen)


def _tokenize(tokenizer, texts: list[str], separator: int | None, dtype) -> np.ndarray:
    ids: list[int] = []
    batch = 512
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=True)["input_ids"]
        for row in encoded:
            ids.extend(row)
            if separator is not None:
                ids.append(separator)
    return np.asarray(ids, dtype=dtype)
