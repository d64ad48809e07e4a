"""Dataset preparation through the real gRPC service: exact report counts,
cleaning results, tokenizer round-trips, content addressing, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from transformers import AutoTokenizer

from lattice.v1 import trainer_pb2
from services.trainer.data.decoding import decode_bytes, repair_mojibake
from services.trainer.data.dedupe import NearDuplicateIndex
from services.trainer.data.store import dataset_id
from tests.support.identity import ADMIN

from .conftest import docstring_spec


def write_corpus(root: Path) -> None:
    root.mkdir()
    (root / "a.txt").write_text(
        "Hello <b>world</b>   this is the first document about caching.\n\n"
        "Hello <b>world</b> this is the first document about caching.\n\n"
        "Café au lait and naïve résumé text here.\n\n"
        "tiny\n\n"
        "<script>var x = 1;</script>   \n\n"
        "Mojibake cafÃ© should be repaired.\n",
        encoding="utf-8",
    )
    (root / "b.txt").write_bytes(
        "Café au lait and naïve résumé text here.\r\n\r\n"
        "Smart “quotes” in cp1252 document number two.\r\n".encode("cp1252")
    )
    (root / "c.txt").write_bytes(
        "Valid ünïcode text with a bad byte ".encode() + b"\xff" + b" here and more words.\n"
    )
    lines = [
        json.dumps({"body": "Json document one with &amp; entity and\u0007 control char."}),
        "{not json",
        json.dumps({"other": "no body here"}),
        json.dumps({"body": "Json document three that is distinct enough."}),
    ]
    (root / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "e.csv").write_text(
        'id,body\n1,"CSV row one, with a comma inside quotes."\n'
        "2,Hello world this is the first document about caching.\n",
        encoding="utf-8",
    )


EXPECTED_TEXTS = {
    "Hello world this is the first document about caching.",
    "Café au lait and naïve résumé text here.",
    "Mojibake café should be repaired.",
    "Smart “quotes” in cp1252 document number two.",
    "Valid ünïcode text with a bad byte \ufffd here and more words.",
    "Json document one with & entity and control char.",
    "Json document three that is distinct enough.",
    "CSV row one, with a comma inside quotes.",
}


def corpus_spec(root: Path, **cleaning) -> trainer_pb2.DatasetSpec:
    options = {
        "normalize_unicode": True,
        "strip_markup": True,
        "normalize_whitespace": True,
        "min_chars": 10,
        "deduplicate": True,
    }
    options.update(cleaning)
    return trainer_pb2.DatasetSpec(
        name="mixed",
        sources=[
            trainer_pb2.DataSource(path=str(root / "*.txt")),
            trainer_pb2.DataSource(path=str(root / "d.jsonl"), text_field="body"),
            trainer_pb2.DataSource(path=str(root / "e.csv"), text_field="body"),
        ],
        cleaning=trainer_pb2.CleaningOptions(**options),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=400
        ),
        validation_fraction=0.25,
        seed=3,
    )


def read_texts(directory: Path, split: str) -> list[str]:
    lines = (directory / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


async def test_mixed_corpus_report_is_exact_and_tokenizer_round_trips(
    tmp_path, trainer, trainer_server
):
    write_corpus(tmp_path / "corpus")
    response = await trainer.PrepareDataset(
        trainer_pb2.PrepareDatasetRequest(spec=corpus_spec(tmp_path / "corpus"))
    )
    dataset = response.dataset
    report = dataset.report
    assert report.documents_in == 15
    assert dict(report.dropped) == {
        "duplicate": 3,
        "too_short": 1,
        "empty": 1,
        "malformed": 1,
        "missing_field": 1,
    }
    assert report.documents_out == 8
    assert report.documents_in == report.documents_out + sum(report.dropped.values())
    assert report.invalid_bytes == 1
    assert dict(report.encodings) == {"utf-8": 13, "cp1252": 2}
    assert report.repaired_documents == 1
    assert (report.train_documents, report.validation_documents) == (6, 2)
    assert dataset.id == dataset_id("mixed", ADMIN.tenant, dataset.digest) and dataset.version == 1
    assert dataset.tenant == ADMIN.tenant

    directory = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
    train, validation = read_texts(directory, "train"), read_texts(directory, "validation")
    assert set(train) | set(validation) == EXPECTED_TEXTS
    tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
    assert report.vocab_size == len(tokenizer)
    for text in train + validation:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    expected_tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in train)
    assert report.train_tokens == expected_tokens
    stream = np.fromfile(directory / "train.bin", dtype="<u2")
    assert len(stream) == expected_tokens

    again = await trainer.PrepareDataset(
        trainer_pb2.PrepareDatasetRequest(spec=corpus_spec(tmp_path / "corpus"))
    )
    assert again.dataset.id == dataset.id and again.dataset.version == 1
    other = corpus_spec(tmp_path / "corpus")
    other.seed = 4  # another split: new content, same name -> version 2
    second = (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=other))).dataset
    assert second.id != dataset.id and second.version == 2
    listed = await trainer.ListDatasets(trainer_pb2.ListDatasetsRequest())
    assert [d.id for d in listed.datasets] == [second.id, dataset.id]
    got = await trainer.GetDataset(trainer_pb2.GetDatasetRequest(dataset_id=dataset.id))
    assert got.dataset == dataset


async def test_near_duplicates_and_stop_words(tmp_path, trainer, trainer_server):
    root = tmp_path / "near"
    root.mkdir()
    base = (
        "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm "
        "mat near the old wooden door of the little house by the river"
    )
    (root / "n.txt").write_text(
        base + "\n\n" + base.replace("little", "small") + "\n\n"
        "an entirely different sentence about gradient descent and learning rates\n",
        encoding="utf-8",
    )
    spec = trainer_pb2.DatasetSpec(
        name="near",
        sources=[trainer_pb2.DataSource(path=str(root))],
        cleaning=trainer_pb2.CleaningOptions(
            deduplicate=True,
            near_deduplicate=True,
            near_duplicate_threshold=0.6,
            remove_stop_words=True,
        ),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_WORDPIECE, vocab_size=300
        ),
        validation_fraction=0.5,
    )
    dataset = (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))).dataset
    assert dict(dataset.report.dropped) == {"near_duplicate": 1}
    assert dataset.report.documents_out == 2
    # Stop words counted in all three documents (the near duplicate is dropped later).
    assert dataset.report.stop_words_removed == 12 + 12 + 3
    directory = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
    texts = read_texts(directory, "train") + read_texts(directory, "validation")
    assert "entirely different sentence gradient descent learning rates" in texts


@pytest.mark.parametrize(
    ("source", "field"),
    [
        (trainer_pb2.DataSource(path="nonexistent/corpus.txt"), "spec.sources[0].path"),
        (trainer_pb2.DataSource(builtin="wikipedia"), "spec.sources[0].builtin"),
        (
            trainer_pb2.DataSource(builtin="python-docstrings", encoding="klingon"),
            "spec.sources[0].encoding",
        ),
    ],
)
async def test_bad_dataset_specs_are_invalid_argument(trainer, trainer_server, source, field):
    spec = trainer_pb2.DatasetSpec(name="bad", sources=[source])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if field:
        assert field in caught.value.details()


async def test_bad_name_and_unknown_dataset(trainer, trainer_server):
    spec = docstring_spec("Not_A_Label")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.GetDataset(trainer_pb2.GetDatasetRequest(dataset_id="nope-123"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_decoding_counts_invalid_bytes_and_detects_legacy():
    assert decode_bytes("naïve".encode("cp1252")).encoding == "cp1252"
    mostly_utf8 = "größe ünd".encode() + b"\xfe\xff"
    decoded = decode_bytes(mostly_utf8)
    assert (decoded.encoding, decoded.invalid_bytes) == ("utf-8", 2)
    declared = decode_bytes(b"ab\xffcd", "ascii")
    assert (declared.text, declared.invalid_bytes) == ("ab\ufffdcd", 1)
    assert decode_bytes("bom ü".encode("utf-16")).text == "bom ü"
    assert repair_mojibake("naÃ¯ve") == ("naïve", True)
    assert repair_mojibake("plain café") == ("plain café", False)


def test_near_duplicate_index_keeps_first_of_group():
    index = NearDuplicateIndex(threshold=0.8)
    words = " ".join(f"word{i}" for i in range(60))
    assert index.add_if_new(words)
    assert not index.add_if_new(words.replace("word30", "other"))
    assert index.add_if_new(" ".join(f"term{i}" for i in range(60)))
