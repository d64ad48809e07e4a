"""Which training program a job's worker runs, by model family."""

from __future__ import annotations

import argparse
from pathlib import Path

from lattice.v1 import trainer_pb2
from services.trainer.worker import classify, glove, train, word2vec
from services.trainer.worker.config import WorkerConfig

#: Families with their own training program (not the language-model loop).
WORD_FAMILIES = {
    trainer_pb2.MODEL_FAMILY_WORD2VEC: word2vec.run,
    trainer_pb2.MODEL_FAMILY_GLOVE: glove.run,
    trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION: classify.run,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lattice training worker (run by torchrun)")
    parser.add_argument("--job-dir", required=True, type=Path)
    args, _rest = parser.parse_known_args(argv)
    config = WorkerConfig.load(args.job_dir)
    program = WORD_FAMILIES.get(config.spec.family)
    if program is None:
        train.main(argv)
    else:
        program(config)
