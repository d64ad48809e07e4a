"""The quality gate a trained model passes before it is registered.

A model whose validation loss is not below the loss of a uniform guess over
its vocabulary (ln V nats per token) has learnt nothing, or has diverged: it
must not become a version anyone can route traffic to. A job spec may set a
stricter (or looser) threshold. A classifier is held to the same rule over its
labels (ln of the label count: the cross-entropy of a uniform guess). Word
vectors have no validation loss; their evaluation goes into the version instead.
"""

from __future__ import annotations

import math

from lattice.v1 import trainer_pb2

#: Families without a validation loss: not gated here.
UNGATED = frozenset({trainer_pb2.MODEL_FAMILY_WORD2VEC, trainer_pb2.MODEL_FAMILY_GLOVE})


def threshold(spec: trainer_pb2.JobSpec, vocab_size: int) -> float:
    return spec.max_validation_loss or math.log(max(vocab_size, 2))


def refusal(spec: trainer_pb2.JobSpec, result: dict) -> str | None:
    """Why the result must not be registered, or None when it passes."""
    if spec.family in UNGATED:
        return None
    val_loss = float(result.get("metrics", {}).get("val_loss", math.nan))
    if spec.family == trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION:
        size, what = int(result.get("num_labels", 0)), "label count"
    else:
        size, what = int(result.get("vocab_size", 0)), "vocabulary size"
    limit = threshold(spec, size)
    source = (
        "the job's max_validation_loss"
        if spec.max_validation_loss
        else (f"ln({what} {size}), a uniform guess")
    )
    if not math.isfinite(val_loss):
        return f"final validation loss is {val_loss}; nothing was registered"
    if val_loss >= limit:
        return (
            f"final validation loss {val_loss:.4g} is not below {limit:.4g} ({source}); "
            "nothing was registered"
        )
    return None
