"""A Word2Vec model end to end through the real gateway: dataset, trainer job,
registry, deployment, then SimilarWords and Embed with the sync SDK, the async
SDK and the CLI."""

from __future__ import annotations

import time

import pytest

import lattice
from lattice.tokens import TENANT_SCOPES, mint_dev_token
from lattice.v1 import trainer_pb2
from tests.cli.conftest import Cli
from tests.sdk.real_stack import SECRET, RealStack
from tests.support.word_corpus import PAIRS, planted_sentences, write_jsonl

pytestmark = pytest.mark.slow

MODEL = "planted-words"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    stack = RealStack(root).start()
    try:
        corpus = write_jsonl(root / "planted.jsonl", planted_sentences(3000))
        with lattice.Client(stack.gateway, stack.token) as client:
            source = client.upload_sources(corpus).directory  # into acme's source directory
            dataset = client.prepare_dataset(
                "planted",
                [source],
                vocab_size=300,
                cleaning={"normalize_whitespace": True},  # no dedupe: sentences repeat
            )
            job = client.submit_job(
                trainer_pb2.JobSpec(
                    family=trainer_pb2.MODEL_FAMILY_WORD2VEC,
                    dataset_id=dataset.id,
                    hyperparameters=trainer_pb2.Hyperparameters(epochs=15, seed=1),
                    word_embedding=trainer_pb2.WordEmbeddingOptions(
                        dimensions=24, window=3, min_count=2, workers=2
                    ),
                    registration=trainer_pb2.RegistrationSpec(model_name=MODEL),
                )
            )
            finished = client.wait_job(job.id, timeout=120)
            assert finished.state == trainer_pb2.JOB_STATE_SUCCEEDED, finished.error
            client.deploy(MODEL, {1: 100}, reason="test")
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.similar_words(MODEL, "king", top_k=1)
                    break
                except (lattice.FailedPrecondition, lattice.Unavailable, lattice.NotFound):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        yield stack
    finally:
        stack.stop()


def test_similar_words_and_embed_through_the_gateway(stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        for first, second in PAIRS:
            result = client.similar_words(MODEL, first, top_k=3)
            assert isinstance(result, lattice.SimilarWords)
            assert result.words[0][0] == second
            assert (result.model_name, result.model_version) == (MODEL, 1)
        vector = client.embed(MODEL, ["king"]).vectors[0]
        assert client.similar_words(MODEL, vector, top_k=1).words[0][0] == "king"
        mixed = client.embed(MODEL, ["queen rules", "zzz"], skip_cache=True)
        assert mixed.unknown_words == [[], ["zzz"]]
        assert not any(mixed.vectors[1])
        with pytest.raises(lattice.InvalidArgument, match="not in the model's vocabulary"):
            client.similar_words(MODEL, "emperor")


async def test_async_similar_words_through_the_gateway(stack):
    async with lattice.AsyncClient(stack.gateway, stack.token) as client:
        result = await client.similar_words(MODEL, "dog", top_k=2)
        assert result.words[0][0] == "cat"


def test_similar_words_needs_the_invoke_scope(stack):
    token = mint_dev_token(SECRET, tenant="acme", scopes=["registry:read"], subject="reader")
    with lattice.Client(stack.gateway, token) as client, pytest.raises(lattice.PermissionDenied):
        client.similar_words(MODEL, "king")


def test_another_tenant_sees_no_model_and_the_allowlist_decides_who_may_ask(stack):
    """The model is acme's: globex gets NOT_FOUND from the registry, and once the
    policy allows only acme, SimilarWords refuses globex as Embed does."""
    globex = mint_dev_token(SECRET, tenant="globex", scopes=TENANT_SCOPES, subject="other")
    with (
        lattice.Client(stack.gateway, globex) as other,
        lattice.Client(stack.gateway, stack.admin_token) as owner,
    ):
        with pytest.raises(lattice.NotFound):
            other.get_model(MODEL)
        with pytest.raises(lattice.NotFound):
            other.similar_words("no-such-model", "king")
        owner.set_policy(MODEL, allowed_tenants=["acme"])
        try:
            deadline = time.monotonic() + 30
            while True:  # the gateway applies the policy from its registry Watch
                try:
                    other.similar_words(MODEL, "king")
                except lattice.PermissionDenied as error:
                    assert "may not use model" in str(error)
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert owner.similar_words(MODEL, "king", top_k=1).words
        finally:
            owner.set_policy(MODEL)


def test_cli_similar(stack, tmp_path):
    cli = Cli(stack.gateway, stack.token, tmp_path)
    lines = cli("similar", MODEL, "car", "-k", "3").stdout.splitlines()
    assert len(lines) == 3 and lines[0].split()[1] == "truck"
    listed = cli.json("similar", MODEL, "car", "-k", "2")
    assert listed["words"][0][0] == "truck"
    assert "INVALID_ARGUMENT" in cli("similar", MODEL, "emperor", ok=False).stderr
