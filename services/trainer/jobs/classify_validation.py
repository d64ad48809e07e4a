"""Check the parts of a SEQUENCE_CLASSIFICATION spec that differ from LM jobs:
a backbone (from scratch), a labelled dataset with a matching tokenizer, one
process."""

from __future__ import annotations

import json

from lattice.errors import FailedPrecondition, InvalidArgument
from lattice.v1 import trainer_pb2
from services.trainer.data.at_rest import DatasetFiles
from services.trainer.data.records import records_of

_TOKENIZER = {
    trainer_pb2.CLASSIFICATION_BACKBONE_GPT2: "TOKENIZER_KIND_BYTE_LEVEL_BPE",
    trainer_pb2.CLASSIFICATION_BACKBONE_BERT: "TOKENIZER_KIND_WORDPIECE",
}


def resolve(spec: trainer_pb2.JobSpec, dataset: DatasetFiles) -> None:
    if not spec.base_model and spec.classification_backbone not in _TOKENIZER:
        raise InvalidArgument("spec.classification_backbone", "required from scratch: GPT2 or BERT")
    dist = spec.distributed
    if dist.processes_per_node > 1 or dist.nodes > 1:
        raise InvalidArgument("spec.distributed", "classification jobs run in one process")
    dist.processes_per_node, dist.nodes = 1, 1
    dist.strategy = trainer_pb2.DISTRIBUTED_STRATEGY_DDP
    if dist.backend == trainer_pb2.DISTRIBUTED_BACKEND_UNSPECIFIED:
        dist.backend = trainer_pb2.DISTRIBUTED_BACKEND_GLOO
    first = next(records_of(dataset, "train"), None)
    if first is None or first.label is None:
        raise FailedPrecondition(
            f"dataset {spec.dataset_id} has no labels; prepare it with a label_field"
        )
    if not spec.base_model:
        meta = json.loads(dataset.read_text("meta.json"))
        wanted = _TOKENIZER[spec.classification_backbone]
        if meta.get("tokenizer_kind") != wanted:
            raise FailedPrecondition(
                f"dataset {spec.dataset_id} has a {meta.get('tokenizer_kind')} tokenizer; "
                f"this backbone needs {wanted}"
            )
