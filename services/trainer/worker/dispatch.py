"""Which training program a job's worker runs, by model family.

Programs are imported by name when a job runs them: each brings its own
heavy dependency (gensim for word vectors), which the others never need.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from lattice.v1 import trainer_pb2
from services.trainer.worker.config import WorkerConfig

#: Families with their own training program (a module with `run(config)`);
#: the rest run the language-model loop, `services.trainer.worker.train`.
WORD_FAMILIES = {
    trainer_pb2.MODEL_FAMILY_WORD2VEC: "services.trainer.worker.word2vec",
    trainer_pb2.MODEL_FAMILY_GLOVE: "services.trainer.worker.glove",
    trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION: "services.trainer.worker.classify",
}
LANGUAGE_MODEL = "services.trainer.worker.train"


def _parser(*, required: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Lattice training worker (run by torchrun)")
    parser.add_argument("--job-dir", required=required, type=Path)
    return parser


def job_dir(argv: list[str]) -> Path | None:
    """The job directory named in a worker's arguments, if any."""
    args, _rest = _parser(required=False).parse_known_args(argv)
    return args.job_dir


def program(config: WorkerConfig) -> str:
    """The module that trains `config`'s model family."""
    return WORD_FAMILIES.get(config.spec.family, LANGUAGE_MODEL)


def main(argv: list[str] | None = None) -> None:
    args, _rest = _parser().parse_known_args(argv)
    config = WorkerConfig.load(args.job_dir)
    module = importlib.import_module(program(config))
    if module.__name__ == LANGUAGE_MODEL:
        module.main(argv)
    else:
        module.run(config)
