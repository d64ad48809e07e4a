"""The preparation pipeline: sources -> cleaning -> dedupe -> split -> tokenizer -> store.

Per document: decode (`sources`) -> the cleaning steps (`document`) -> length
-> exact, then near-duplicate check.

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
import opencc

from lattice.errors import InvalidArgument
from lattice.refs import NAME_PATTERN
from lattice.v1 import trainer_pb2
from services.trainer.data.confine import Confinement, SourceRoots
from services.trainer.data.dedupe import NearDuplicateIndex, exact_key
from services.trainer.data.document import DocumentCleaner
from services.trainer.data.labels import check_labels, stratified_split
from services.trainer.data.language import known_language
from services.trainer.data.records import Record, write_records
from services.trainer.data.sources import (
    ReadStats,
    document_sources,
    read_lines,
    read_sources,
    validate_sources,
)
from services.trainer.data.store import DatasetStore
from services.trainer.data.tokenizer import copy_tokenizer, separator_id, train_tokenizer

DEFAULT_VOCAB = 8000
DEFAULT_VALIDATION = 0.1
DEFAULT_NEAR_THRESHOLD = 0.8


def validate_spec(spec: trainer_pb2.DatasetSpec, confine: Confinement) -> None:
    """Fail before any work; walks the sources, so run it off the event loop."""
    if not NAME_PATTERN.match(spec.name):
        raise InvalidArgument("spec.name", "required; a lower-case DNS label")
    validate_sources(spec.sources, confine)
    if not 0.0 <= spec.validation_fraction <= 0.5:
        raise InvalidArgument("spec.validation_fraction", "must be within 0..0.5")
    options = spec.cleaning
    if options.max_chars and options.min_chars > options.max_chars:
        raise InvalidArgument("spec.cleaning.min_chars", "must not exceed max_chars")
    if not 0.0 <= options.near_duplicate_threshold <= 1.0:
        raise InvalidArgument("spec.cleaning.near_duplicate_threshold", "must be within 0..1")
    if spec.tokenizer.kind not in trainer_pb2.TokenizerKind.values():
        known = ", ".join(trainer_pb2.TokenizerKind.keys())
        raise InvalidArgument(
            "spec.tokenizer.kind", f"unknown kind {spec.tokenizer.kind}; one of {known}"
        )
    if not known_language(options.language):
        raise InvalidArgument(
            "spec.cleaning.language", f"{options.language!r}: use auto or an ISO 639-1 code"
        )
    conversion = options.script_conversion.removesuffix(".json")
    if conversion and f"{conversion}.json" not in opencc.CONFIGS:
        known = ", ".join(sorted(c.removesuffix(".json") for c in opencc.CONFIGS))
        raise InvalidArgument(
            "spec.cleaning.script_conversion", f"{conversion!r} unknown; known: {known}"
        )
    vocab = spec.tokenizer.vocab_size
    if not spec.tokenizer.base_model and vocab and not 300 <= vocab <= 1_000_000:
        raise InvalidArgument("spec.tokenizer.vocab_size", "must be within 300..1000000")


class DatasetPreparer:
    def __init__(self, store: DatasetStore, roots: SourceRoots) -> None:
        self.store = store
        self.roots = roots

    def prepare(
        self, spec: trainer_pb2.DatasetSpec, base_dir: Path | None = None, *, tenant: str
    ) -> trainer_pb2.Dataset:
        """Run the pipeline; `base_dir` is the unpacked base model when the spec reuses
        its tokenizer; the dataset belongs to `tenant`, whose source roots it reads."""
        confine = self.roots.for_tenant(tenant)
        validate_spec(spec, confine)
        report = trainer_pb2.DatasetReport()
        documents = self.clean(spec, report, confine)
        labelled = _label_source(spec)
        if labelled is not None:
            labels = [r.label or "" for r in documents]
            check_labels(labels, report.dropped.get("missing_label", 0), labelled)
            for label, count in Counter(labels).items():
                report.label_counts[label] = count
            fraction = spec.validation_fraction or DEFAULT_VALIDATION
            train_ids, validation_ids = stratified_split(labels, fraction, spec.seed)
        else:
            train_ids, validation_ids = _split(len(documents), spec)
        train = [documents[i] for i in train_ids]
        validation = [documents[i] for i in validation_ids]
        report.train_documents = len(train)
        report.validation_documents = len(validation)
        staging = self.store.staging_dir()
        try:
            self._write(staging, spec, train, validation, report, base_dir)
            dataset = trainer_pb2.Dataset(name=spec.name, spec=spec, report=report, tenant=tenant)
            return self.store.commit(staging, dataset)
        except BaseException:
            self.store.discard(staging)
            raise

    def clean(
        self,
        spec: trainer_pb2.DatasetSpec,
        report: trainer_pb2.DatasetReport,
        confine: Confinement,
    ) -> list[Record]:
        """Read (inside `confine`) and clean every document, filling `report`; the
        documents kept (with their labels in a labelled dataset: a duplicate keeps
        the first occurrence's label)."""
        options = spec.cleaning
        stats = ReadStats()
        dropped: Counter[str] = Counter()
        encodings: Counter[str] = Counter()
        languages: Counter[str] = Counter()
        removed_by_language: Counter[str] = Counter()
        seen: set[bytes] = set()
        threshold = options.near_duplicate_threshold or DEFAULT_NEAR_THRESHOLD
        near = NearDuplicateIndex(threshold) if options.near_deduplicate else None
        cleaner = DocumentCleaner(
            options,
            user_dictionary=read_lines(
                spec.sources, trainer_pb2.DATA_SOURCE_ROLE_USER_DICTIONARY, confine
            ),
            extra_stop_words=[
                *options.stop_words,
                *read_lines(spec.sources, trainer_pb2.DATA_SOURCE_ROLE_STOP_WORDS, confine),
            ],
        )
        kept: list[Record] = []
        for raw in read_sources(spec.sources, stats, confine):
            report.documents_in += 1
            encodings[raw.encoding] += 1
            if raw.problem:
                dropped[raw.problem] += 1
                continue
            cleaned = cleaner.clean(raw.text)
            text, language = cleaned.text, cleaned.language
            languages[language] += 1
            report.repaired_documents += int(cleaned.repaired)
            report.converted_documents += int(cleaned.converted)
            if cleaned.words is not None:
                report.segmented_documents += 1
            if options.remove_stop_words:
                report.stop_words_removed += cleaned.stop_words_removed
                removed_by_language[language] += cleaned.stop_words_removed
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
            if near is not None and not near.add_if_new(text, language):
                dropped["near_duplicate"] += 1
                report.near_duplicates_dropped += 1
                continue
            kept.append(Record(text, language, cleaned.words, raw.label or None))
        report.documents_out = len(kept)
        report.invalid_bytes = stats.invalid_bytes
        report.undecodable_files.extend(stats.undecodable_files)
        for counter, field in (
            (dropped, report.dropped),
            (encodings, report.encodings),
            (languages, report.languages),
            (removed_by_language, report.stop_words_removed_by_language),
        ):
            for key_name, count in counter.items():
                field[key_name] = count
        if not kept:
            labelled = _label_source(spec)
            if dropped.get("missing_label") and labelled is not None:
                check_labels([], dropped["missing_label"], labelled)
            raise InvalidArgument("spec.sources", "no document survived cleaning")
        return kept

    def _write(
        self,
        staging: Path,
        spec: trainer_pb2.DatasetSpec,
        train: list[Record],
        validation: list[Record],
        report: trainer_pb2.DatasetReport,
        base_dir: Path | None,
    ) -> None:
        tokenizer_dir = staging / "tokenizer"
        if spec.tokenizer.base_model:
            if base_dir is None:
                raise InvalidArgument("spec.tokenizer.base_model", "base model not fetched")
            tokenizer = copy_tokenizer(base_dir, tokenizer_dir)
        else:
            vocab = spec.tokenizer.vocab_size or DEFAULT_VOCAB
            texts = [record.text for record in train]
            tokenizer = train_tokenizer(spec.tokenizer.kind, texts, vocab, tokenizer_dir)
        report.vocab_size = len(tokenizer)
        dtype = np.uint16 if len(tokenizer) < 65536 else np.uint32
        separator = separator_id(tokenizer)
        for name, records in (("train", train), ("validation", validation)):
            write_records(staging / f"{name}.jsonl", records)
            tokens = _tokenize(tokenizer, [r.text for r in records], separator, dtype)
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


def _label_source(spec: trainer_pb2.DatasetSpec) -> trainer_pb2.DataSource | None:
    """A labelled dataset's first document source (all set label_field); None if unlabelled."""
    documents = document_sources(spec.sources)
    return documents[0] if documents and documents[0].label_field else None


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
