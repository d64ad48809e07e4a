"""What the service hands a worker: the resolved job spec and where things live."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from lattice.v1 import trainer_pb2
from services.runtime.keys import LocalKeyRing
from services.trainer.data.at_rest import DatasetFiles

CONFIG_FILE = "job.json"


@dataclasses.dataclass
class WorkerConfig:
    job_id: str
    #: JobSpec with every default filled in (see services.trainer.jobs.validation).
    spec: trainer_pb2.JobSpec
    dataset_dir: Path
    job_dir: Path
    #: Unpacked base model (fine-tuning), or None.
    base_model_dir: Path | None = None
    #: The unpacked word-embedding version of spec.initial_word_embeddings.
    word_vectors_dir: Path | None = None
    #: Parameter statistics every N steps; histograms every M steps.
    stats_interval: int = 10
    histogram_interval: int = 100
    #: Validation batches per evaluation (per rank, at most).
    eval_batches: int = 16
    #: Checkpoints to keep (besides best).
    keep_checkpoints: int = 2
    #: Host allocator policy (see services.trainer.worker.allocator).
    allocator: str = "retain"
    #: The key ring that opens a dataset encrypted at rest ("" = none).
    key_ring_file: str = ""

    @property
    def events_path(self) -> Path:
        return self.job_dir / "events.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.job_dir / "checkpoints"

    @property
    def best_dir(self) -> Path:
        return self.job_dir / "best"

    @property
    def export_dir(self) -> Path:
        return self.job_dir / "export"

    @property
    def result_path(self) -> Path:
        return self.job_dir / "result.json"

    def dataset_files(self) -> DatasetFiles:
        """The job's dataset as plaintext, opened with the job's key ring when
        the dataset is encrypted at rest."""
        return DatasetFiles(self.dataset_dir, self.dataset_keys())

    def dataset_keys(self) -> LocalKeyRing | None:
        return LocalKeyRing(Path(self.key_ring_file)) if self.key_ring_file else None

    def write_result(self, result: dict[str, Any]) -> None:
        """Write result.json atomically and durably: the service reads it once
        the process group exits, and a half-written one would fail the job."""
        temp = self.result_path.with_suffix(".tmp")
        with temp.open("w") as handle:
            handle.write(json.dumps(result, default=str))
            handle.flush()
            os.fsync(handle.fileno())
        temp.rename(self.result_path)

    def save(self) -> Path:
        payload = {
            "job_id": self.job_id,
            "spec": json_format.MessageToDict(self.spec),
            "dataset_dir": str(self.dataset_dir),
            "job_dir": str(self.job_dir),
            "base_model_dir": str(self.base_model_dir) if self.base_model_dir else None,
            "word_vectors_dir": str(self.word_vectors_dir) if self.word_vectors_dir else None,
            "stats_interval": self.stats_interval,
            "histogram_interval": self.histogram_interval,
            "eval_batches": self.eval_batches,
            "keep_checkpoints": self.keep_checkpoints,
            "allocator": self.allocator,
            "key_ring_file": self.key_ring_file,
        }
        path = self.job_dir / CONFIG_FILE
        path.write_text(json.dumps(payload, indent=1))
        return path

    @classmethod
    def load(cls, job_dir: Path) -> WorkerConfig:
        payload = json.loads((job_dir / CONFIG_FILE).read_text())
        spec = json_format.ParseDict(payload.pop("spec"), trainer_pb2.JobSpec())
        base = payload.pop("base_model_dir")
        words = payload.pop("word_vectors_dir", None)
        return cls(
            spec=spec,
            dataset_dir=Path(payload.pop("dataset_dir")),
            job_dir=Path(payload.pop("job_dir")),
            base_model_dir=Path(base) if base else None,
            word_vectors_dir=Path(words) if words else None,
            **payload,
        )
