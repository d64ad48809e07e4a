"""A SEQUENCE_CLASSIFICATION job: a GPT-2 or BERT backbone with a classification
head (transformers' GPT2ForSequenceClassification / BertForSequenceClassification),
trained on a labelled dataset in one process.

Every step emits the usual metrics event; each evaluation adds an `evaluation`
event with accuracy, macro-F1, the label set and the confusion matrix, which
also become the registered version's metrics.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedModel,
)

from lattice.v1 import trainer_pb2
from services.runtime.keys import KeyManager
from services.trainer.data.records import read_records
from services.trainer.worker.classification_metrics import ClassificationReport, report
from services.trainer.worker.config import WorkerConfig
from services.trainer.worker.events import EventWriter
from services.trainer.worker.schedule import lr_lambda


def read_labelled(
    dataset_dir: Path, split: str, keys: KeyManager | None
) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for record in read_records(dataset_dir, split, keys):
        if record.label is None:
            raise ValueError("the dataset has no labels (prepare it with label_field)")
        texts.append(record.text)
        labels.append(record.label)
    return texts, labels


def build_classifier(
    spec: trainer_pb2.JobSpec, tokenizer, labels: list[str], base_dir: Path | None
) -> PreTrainedModel:
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    if base_dir is not None:
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=len(labels), id2label=id2label, label2id=label2id
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model
    arch = spec.architecture
    config: BertConfig | GPT2Config
    if spec.classification_backbone == trainer_pb2.CLASSIFICATION_BACKBONE_BERT:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.hidden_size,
            num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads,
            intermediate_size=4 * arch.hidden_size,
            max_position_embeddings=arch.max_positions,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=arch.max_positions,
            n_embd=arch.hidden_size,
            n_layer=arch.num_layers,
            n_head=arch.num_heads,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    config.num_labels = len(labels)
    config.id2label, config.label2id = id2label, label2id
    if isinstance(config, BertConfig):
        return BertForSequenceClassification(config)
    return GPT2ForSequenceClassification(config)


class ClassifierTrainer:
    def __init__(self, config: WorkerConfig) -> None:
        self.config, self.spec, self.hp = config, config.spec, config.spec.hyperparameters
        self.events = EventWriter(config.events_path)

    def setup(self) -> None:
        directory, keys = self.config.dataset_dir, self.config.dataset_keys()
        self.train_texts, train_labels = read_labelled(directory, "train", keys)
        self.val_texts, val_labels = read_labelled(directory, "validation", keys)
        self.labels = sorted(set(train_labels) | set(val_labels))
        if len(self.labels) < 2:
            raise ValueError(f"a classifier needs at least two labels; found {self.labels}")
        index = {label: i for i, label in enumerate(self.labels)}
        self.train_y = torch.tensor([index[y] for y in train_labels])
        self.val_y = torch.tensor([index[y] for y in val_labels])
        # A sealed dataset's tokenizer is opened into the job's scratch directory.
        scratch = self.config.job_dir / "scratch"
        source = self.config.base_model_dir or self.config.dataset_files().plain_directory(
            "tokenizer", scratch
        )
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch.manual_seed(self.hp.seed)
        self.model = build_classifier(
            self.spec, self.tokenizer, self.labels, self.config.base_model_dir
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay
        )
        steps_per_epoch = max(1, len(self.train_texts) // self.hp.batch_size)
        self.total_steps = self.hp.max_steps or self.hp.epochs * steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.hp.schedule, self.hp.warmup_steps, self.total_steps)
        )
        self.generator = torch.Generator().manual_seed(self.hp.seed)

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            truncation=True,
            max_length=self.hp.sequence_length,
            padding=True,
            return_tensors="pt",
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, ClassificationReport]:
        self.model.eval()
        predicted, loss_sum = [], 0.0
        size = self.hp.batch_size
        for start in range(0, len(self.val_texts), size):
            batch = self._encode(self.val_texts[start : start + size])
            labels = self.val_y[start : start + size]
            out = self.model(**batch, labels=labels)
            loss_sum += float(out.loss) * len(labels)
            predicted += out.logits.argmax(-1).tolist()
        truth = [self.labels[i] for i in self.val_y.tolist()]
        result = report(truth, [self.labels[i] for i in predicted], self.labels)
        return loss_sum / max(1, len(self.val_texts)), result

    def run(self) -> None:
        try:
            self.setup()
        except Exception as error:
            self.events.emit("setup_failed", rank=0, message=f"{type(error).__name__}: {error}")
            raise
        self.events.emit(
            "started",
            step=0,
            total_steps=self.total_steps,
            world_size=1,
            threads=torch.get_num_threads(),
            allocator="",
        )
        order = torch.randperm(len(self.train_texts), generator=self.generator)
        cursor, size, last = 0, self.hp.batch_size, None
        for step in range(1, self.total_steps + 1):
            if cursor + size > len(order):
                order, cursor = torch.randperm(len(self.train_texts), generator=self.generator), 0
            pick = order[cursor : cursor + size].tolist()
            cursor += size
            started = time.perf_counter()
            self.model.train()
            batch = self._encode([self.train_texts[i] for i in pick])
            loss = self.model(**batch, labels=self.train_y[pick]).loss
            loss.backward()
            clip = self.hp.gradient_clip_norm
            norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), clip if clip > 0 else math.inf
            )
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - started
            metrics = {
                "step": step,
                "epoch": step * size // max(1, len(self.train_texts)),
                "loss": float(loss.detach()),
                "learning_rate": self.scheduler.get_last_lr()[0],
                "gradient_norm": float(norm),
                "tokens_per_second": int(batch["attention_mask"].sum()) / elapsed,
                "total_steps": self.total_steps,
            }
            every = self.spec.eval_interval_steps
            if (every and step % every == 0) or step == self.total_steps:
                val_loss, last = self.evaluate()
                metrics["validation_loss"] = val_loss
                metrics["validation_perplexity"] = math.exp(min(val_loss, 50.0))
                self.events.emit(
                    "evaluation",
                    step=step,
                    accuracy=last.accuracy,
                    macro_f1=last.macro_f1,
                    labels=last.labels,
                    confusion=last.confusion,
                )
            self.events.emit("metrics", **metrics)
        assert last is not None
        export = self.config.export_dir
        self.model.save_pretrained(export)
        # Serving truncates where training did: positions past it were never trained.
        self.tokenizer.model_max_length = self.hp.sequence_length
        self.tokenizer.save_pretrained(export)
        result = {
            "outcome": "completed",
            "step": self.total_steps,
            "metrics": {"val_loss": val_loss, **last.as_metrics()},
            "params": {"labels": json.dumps(self.labels, ensure_ascii=False)},
            "num_labels": len(self.labels),
            "format": "ARTIFACT_FORMAT_TRANSFORMERS",
            "export_dir": str(export),
        }
        self.config.write_result(result)
        self.events.emit("finished", outcome="completed", step=self.total_steps)


def run(config: WorkerConfig) -> None:
    ClassifierTrainer(config).run()
