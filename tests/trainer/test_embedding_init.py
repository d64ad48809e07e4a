"""Word vectors as initial parameters of GPT-2/BERT jobs: the row copy on a real
tokenizer and gensim vectors, then through the real trainer and registry (a
WORD2VEC job's version initialises a GPT-2 job), with the rows reported, and
the validation loss with and without it printed for the record."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from gensim.models import Word2Vec
from transformers import AutoModelForCausalLM, AutoTokenizer

from lattice.v1 import trainer_pb2
from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
from services.trainer.worker.embedding_init import initialise_rows, token_word
from tests.support.word_corpus import planted_sentences, write_jsonl

from .conftest import tiny_gpt2_job, wait_for_job
from .test_training import collect, versions
from .test_word2vec import corpus_spec, prepare, word2vec_job


@pytest.fixture(scope="module")
def vectors():
    sentences = [s.split() for s in planted_sentences(500)]
    model = Word2Vec(sentences, vector_size=16, window=3, min_count=1, seed=1, workers=1)
    return model.wv


def test_rows_of_whole_words_are_copied_and_scaled(tmp_path, vectors):
    directory = build_tiny_causal_lm(tmp_path / "lm", n_embd=64)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    before = model.get_input_embeddings().weight.detach().clone()
    rows = initialise_rows(model, tokenizer, vectors)
    vocab = tokenizer.get_vocab()
    expected = {index for token, index in vocab.items() if token_word(tokenizer, token) in vectors}
    assert rows == len(expected) > 0
    after = model.get_input_embeddings().weight.detach()
    changed = {i for i in range(after.shape[0]) if not torch.equal(after[i], before[i])}
    assert changed == expected
    index = vocab["\u0120the"]  # " the": a whole word with BPE's space marker
    copied = after[index][:16]
    assert torch.corrcoef(torch.stack([copied, torch.tensor(vectors["the"])]))[0, 1] > 0.999
    assert not after[index][16:].any()  # 16 dimensions into 64: the rest zero
    assert float(after[sorted(expected)][:, :16].std()) == pytest.approx(
        float(before.std()), rel=0.05
    )


def test_word_pieces_are_not_words(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_encoder(tmp_path / "enc"))
    assert token_word(tokenizer, "##s") is None and token_word(tokenizer, "[CLS]") is None
    assert token_word(tokenizer, "robot") == "robot"


@pytest.mark.slow
async def test_gpt2_job_starts_from_a_word2vec_version(tmp_path, trainer, registry):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(3000))
    dataset = await prepare(trainer, corpus_spec(corpus))
    words = word2vec_job(dataset.id, "planted-vectors", dimensions=64)
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=words))).job
    assert (await wait_for_job(trainer, submitted.id)).state == trainer_pb2.JOB_STATE_SUCCEEDED

    losses = {}
    for name, source in (("plain", ""), ("from-vectors", "planted-vectors:1")):
        spec = tiny_gpt2_job(dataset.id, f"lm-{name}", hyperparameters__max_steps=30)
        spec.initial_word_embeddings = source
        job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
        watcher = asyncio.create_task(collect(trainer, job.id))
        job = await wait_for_job(trainer, job.id, timeout=300)
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
        logs = [e.log for e in await asyncio.wait_for(watcher, 30) if e.log]
        (version,) = await versions(registry, f"lm-{name}")
        losses[name] = version.metrics["val_loss"]
        if source:
            (line,) = [x for x in logs if x.startswith("initialised ")]
            rows = int(line.split()[1])
            # A 300-entry BPE has few merges: only its whole-word tokens get a row.
            assert rows >= 5 and "from planted-vectors:1" in line
            assert version.metrics["init_embedding_rows"] == rows
        else:
            assert "init_embedding_rows" not in version.metrics
    print(f"val loss after 30 steps: {losses}")


async def test_bad_initial_word_embeddings(tmp_path, trainer):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(400))
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = word2vec_job(dataset.id, "words")
    spec.initial_word_embeddings = "some-vectors"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "initial_word_embeddings" in caught.value.details()
    lm = tiny_gpt2_job(dataset.id, "lm")
    lm.initial_word_embeddings = "no-such-vectors"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=lm))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
