"""Check and default the spec of a word-embedding job (WORD2VEC, GLOVE).

These jobs read the prepared dataset's cleaned text (not its token streams), run
in one process with the library's own threads, and have no architecture.
"""

from __future__ import annotations

from pathlib import Path

from lattice.errors import FailedPrecondition, InvalidArgument
from lattice.v1 import trainer_pb2
from services.trainer.data.confine import Confinement

FAMILIES = (trainer_pb2.MODEL_FAMILY_WORD2VEC, trainer_pb2.MODEL_FAMILY_GLOVE)

_FIELD = "spec.word_embedding"


#: Evaluation lists: gensim reads tab-separated pairs and questions-words text.
_LIST_SUFFIXES = (".txt", ".tsv", ".csv")


def resolve(spec: trainer_pb2.JobSpec, dataset_dir: Path, confine: Confinement | None) -> None:
    """Fill in defaults in place; raise on what cannot run. Evaluation lists are read
    only inside the caller's source roots (`confine`), like dataset sources."""
    if spec.base_model:
        raise InvalidArgument("spec.base_model", "word-embedding jobs train from scratch")
    opts = spec.word_embedding
    if opts.algorithm == trainer_pb2.WORD_VECTOR_ALGORITHM_UNSPECIFIED:
        opts.algorithm = trainer_pb2.WORD_VECTOR_ALGORITHM_SKIP_GRAM
    if opts.segmentation == trainer_pb2.WORD_SEGMENTATION_UNSPECIFIED:
        opts.segmentation = trainer_pb2.WORD_SEGMENTATION_AUTO
    opts.dimensions = opts.dimensions or 100
    opts.window = opts.window or 5
    opts.min_count = opts.min_count or 5
    opts.negative = opts.negative or 5
    if not 1 <= opts.dimensions <= 4096:
        raise InvalidArgument(f"{_FIELD}.dimensions", "must be within 1..4096")
    if opts.window > 100:
        raise InvalidArgument(f"{_FIELD}.window", "must be within 1..100")
    if opts.negative > 100:
        raise InvalidArgument(f"{_FIELD}.negative", "must be within 1..100")
    if opts.workers > 256:
        raise InvalidArgument(f"{_FIELD}.workers", "must be within 0..256")
    for name in ("similarity_pairs_path", "analogies_path"):
        path = getattr(opts, name)
        if path:
            setattr(opts, name, str(_confined_file(f"{_FIELD}.{name}", path, confine)))
    hp = spec.hyperparameters
    hp.epochs = hp.epochs or 5
    if hp.max_steps:
        raise InvalidArgument("spec.hyperparameters.max_steps", "word embeddings train by epochs")
    if hp.epochs > 1000:
        raise InvalidArgument("spec.hyperparameters.epochs", "must be within 1..1000")
    glove = spec.family == trainer_pb2.MODEL_FAMILY_GLOVE
    hp.learning_rate = hp.learning_rate or (0.05 if glove else 0.025)
    if not 0 < hp.learning_rate <= 1:
        raise InvalidArgument("spec.hyperparameters.learning_rate", "must be within (0, 1]")
    if opts.glove_x_max < 0 or not 0 <= opts.glove_alpha <= 1:
        raise InvalidArgument(f"{_FIELD}.glove_x_max", "x_max must be > 0, alpha within 0..1")
    dist = spec.distributed
    if dist.processes_per_node > 1 or dist.nodes > 1:
        raise InvalidArgument(
            "spec.distributed",
            "word-embedding jobs run in one process (use word_embedding.workers)",
        )
    dist.processes_per_node, dist.nodes = 1, 1
    dist.strategy = trainer_pb2.DISTRIBUTED_STRATEGY_DDP
    dist.backend = trainer_pb2.DISTRIBUTED_BACKEND_GLOO
    if not (dataset_dir / "train.jsonl").is_file():
        raise FailedPrecondition(f"dataset {spec.dataset_id} has no cleaned text (train.jsonl)")


def _confined_file(field: str, raw: str, confine: Confinement | None) -> Path:
    """The one regular file `raw` names inside the source roots (resolved), else
    PERMISSION_DENIED (outside) or INVALID_ARGUMENT (missing, a directory, a glob)."""
    if confine is None:
        raise FailedPrecondition(f"{field}: this trainer has no source roots to read lists from")
    if any(ch in raw for ch in "*?["):
        raise InvalidArgument(field, "name one file, not a pattern")
    files = confine.expand(raw, field, _LIST_SUFFIXES)
    if len(files) != 1 or files[0] != confine.check(confine.candidate(raw), field, raw):
        raise InvalidArgument(
            field, f"{raw!r}: no such file in your source directory (.txt/.tsv/.csv)"
        )
    return files[0]
