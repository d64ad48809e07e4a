"""Turn the worker's JSON event lines into WatchJob events and job updates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from lattice.v1 import trainer_pb2


def _number(value) -> float:
    if isinstance(value, str):
        return float(value)  # "nan", "inf"
    return float(value)


class EventFileTail:
    """Reads complete lines appended to a file since `offset`."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset

    def read(self, limit: int = 4 * 1024 * 1024) -> list[dict]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(limit)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        records = []
        for line in chunk[: end + 1].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.offset += end + 1
        return records


def metrics_message(record: dict) -> trainer_pb2.TrainingMetrics:
    metrics = trainer_pb2.TrainingMetrics(
        step=int(record["step"]),
        epoch=int(record.get("epoch", 0)),
        loss=_number(record["loss"]),
        learning_rate=_number(record.get("learning_rate", 0.0)),
        gradient_norm=_number(record.get("gradient_norm", 0.0)),
        tokens_per_second=_number(record.get("tokens_per_second", 0.0)),
        total_steps=int(record.get("total_steps", 0)),
    )
    if "validation_loss" in record:
        metrics.validation_loss = _number(record["validation_loss"])
        metrics.validation_perplexity = _number(record["validation_perplexity"])
    if "gpu_utilization" in record:
        metrics.gpu_utilization = _number(record["gpu_utilization"])
        metrics.gpu_memory_bytes = int(record["gpu_memory_bytes"])
    for row in record.get("parameter_stats", ()):
        metrics.parameter_stats.add(
            group=row["group"],
            weight_norm=_number(row["weight_norm"]),
            gradient_norm=_number(row["gradient_norm"]),
            update_ratio=_number(row["update_ratio"]),
            histogram_edges=row.get("histogram_edges", ()),
            histogram_counts=row.get("histogram_counts", ()),
        )
    return metrics


def apply(record: dict, job: trainer_pb2.Job) -> tuple[list[trainer_pb2.WatchJobResponse], bool]:
    """Events for one worker record, updating `job`; also whether the job record changed."""
    kind = record.get("type")
    if kind == "metrics":
        metrics = metrics_message(record)
        latest = job.latest_metrics
        keep_validation = latest.HasField("validation_loss") and not metrics.HasField(
            "validation_loss"
        )
        previous = (latest.validation_loss, latest.validation_perplexity)
        latest.CopyFrom(metrics)
        if keep_validation:  # the latest figures keep the last evaluation
            latest.validation_loss, latest.validation_perplexity = previous
        return [trainer_pb2.WatchJobResponse(metrics=metrics)], True
    if kind == "alert":
        alert = trainer_pb2.TrainingAlert(
            kind=cast(trainer_pb2.AlertKind, int(record["kind"])),
            step=int(record["step"]),
            message=str(record["message"]),
            action=cast(trainer_pb2.AlertAction, int(record["action"])),
            cleared=bool(record.get("cleared", False)),
        )
        job.alerts.append(alert)
        return [trainer_pb2.WatchJobResponse(alert=alert)], True
    if kind == "checkpoint":
        job.checkpoint_step = int(record["step"])
        return [
            trainer_pb2.WatchJobResponse(log=f"checkpoint saved at step {record['step']}")
        ], True
    if kind == "resumed":
        return [
            trainer_pb2.WatchJobResponse(log=f"resumed from checkpoint at step {record['step']}")
        ], False
    if kind == "started":
        return [
            trainer_pb2.WatchJobResponse(
                log=f"training started at step {record['step']} of {record['total_steps']} "
                f"on {record['world_size']} process(es), "
                f"{record.get('threads', '?')} thread(s) each, "
                f"allocator {record.get('allocator') or '?'}"
            )
        ], False
    if kind == "setup_failed":
        return [
            trainer_pb2.WatchJobResponse(log=f"worker set-up failed: {record['message']}")
        ], False
    if kind == "lr_reduced":
        return [
            trainer_pb2.WatchJobResponse(
                log=f"learning rate reduced x{record['factor']:g} to {record['learning_rate']:.3g}"
            )
        ], False
    if kind == "rolled_back":
        return [
            trainer_pb2.WatchJobResponse(
                log=f"rolled back to the checkpoint at step {record['step']}"
            )
        ], False
    if kind == "embeddings_initialised":
        return [
            trainer_pb2.WatchJobResponse(
                log=f"initialised {record['rows']} of {record['vocab_size']} token-embedding "
                f"rows from {record['source']} ({record['words']} words)"
            )
        ], False
    if kind == "evaluation":
        confusion = "; ".join(
            f"{label}: {row}"
            for label, row in zip(record["labels"], record["confusion"], strict=True)
        )
        return [
            trainer_pb2.WatchJobResponse(
                log=f"evaluation at step {record['step']}: accuracy {record['accuracy']:.4f}, "
                f"macro-F1 {record['macro_f1']:.4f}, labels {record['labels']}, "
                f"confusion (true: predicted counts) {confusion}"
            )
        ], False
    if kind == "finished":
        return [trainer_pb2.WatchJobResponse(log=f"training finished: {record['outcome']}")], False
    return [], False
