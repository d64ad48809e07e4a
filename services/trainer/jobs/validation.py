"""Check a JobSpec before anything starts, and fill in the defaults.

Bad input is INVALID_ARGUMENT naming the field; a spec that is fine but cannot
run here (unknown dataset, more processes than the machine has, NCCL without
GPUs, a dataset too small for one step) is FAILED_PRECONDITION.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from lattice.errors import FailedPrecondition, InvalidArgument, NotFound
from lattice.refs import NAME_PATTERN, parse_model_ref
from lattice.v1 import trainer_pb2
from services.runtime.identity import Caller
from services.runtime.keys import KeyManager
from services.trainer.data.at_rest import DatasetFiles
from services.trainer.data.confine import Confinement
from services.trainer.jobs import classify_validation, word_validation

DEFAULT_ARCH = trainer_pb2.ModelArchitecture(
    num_layers=2, num_heads=2, hidden_size=64, max_positions=128
)


MODEL_PARALLEL = frozenset(
    {
        trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL,
        trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL,
        trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID,
    }
)


@dataclasses.dataclass(frozen=True)
class MachineLimits:
    """What this machine can run."""

    cpus: int
    gpus: int
    max_processes_per_node: int
    #: Nodes a job may span (their torchrun agents meet by c10d rendezvous).
    max_nodes: int = 1
    #: Each node is a machine (pod) of its own, not a share of this one.
    cluster: bool = False


def _dtype_size(dtype: str) -> int:
    return 2 if dtype == "uint16" else 4


def resolve_spec(
    spec: trainer_pb2.JobSpec,
    dataset_dir: Path | None,
    limits: MachineLimits,
    confine: Confinement | None = None,
    keys: KeyManager | None = None,
) -> trainer_pb2.JobSpec:
    """A copy of `spec` with defaults filled in; raises on anything that cannot run.
    Files the spec names (word-embedding evaluation lists) must lie in `confine`;
    `keys` opens a dataset encrypted at rest."""
    spec = trainer_pb2.JobSpec.FromString(spec.SerializeToString())
    word_family = spec.family in word_validation.FAMILIES
    if spec.family not in (
        trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM,
        *word_validation.FAMILIES,
        trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION,
    ):
        raise InvalidArgument(
            "spec.family",
            "required: GPT2_CAUSAL_LM, BERT_MASKED_LM, SEQUENCE_CLASSIFICATION, WORD2VEC or GLOVE",
        )
    if spec.initial_word_embeddings:
        _check_initial_word_embeddings(spec)
    if not spec.dataset_id:
        raise InvalidArgument("spec.dataset_id", "required: a prepared dataset id")
    if dataset_dir is None:
        raise FailedPrecondition(f"dataset {spec.dataset_id!r} does not exist; prepare it first")
    if word_family:
        word_validation.resolve(spec, dataset_dir, confine)
        _resolve_registration(spec)
        return spec
    if spec.base_model:
        try:
            parse_model_ref(spec.base_model)
        except Exception as error:
            raise InvalidArgument("spec.base_model", str(error)) from None
    else:
        _resolve_architecture(spec)

    _resolve_hyperparameters(spec)
    classifier = spec.family == trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION
    dataset = DatasetFiles(dataset_dir, keys)
    if classifier:
        classify_validation.resolve(spec, dataset)
    _resolve_distributed(spec, limits)
    _resolve_alerts(spec)
    _resolve_registration(spec)
    if not classifier:
        _check_dataset(spec, dataset)
    return spec


def _check_initial_word_embeddings(spec: trainer_pb2.JobSpec) -> None:
    field = "spec.initial_word_embeddings"
    if spec.family not in (
        trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM,
    ):
        raise InvalidArgument(field, "only GPT2_CAUSAL_LM and BERT_MASKED_LM jobs take it")
    if spec.base_model:
        raise InvalidArgument(field, "a fine-tuned model keeps its base's embeddings")
    try:
        parse_model_ref(spec.initial_word_embeddings)
    except Exception as error:
        raise InvalidArgument(field, str(error)) from None


def _resolve_registration(spec: trainer_pb2.JobSpec) -> None:
    registration = spec.registration
    if not NAME_PATTERN.match(registration.model_name):
        raise InvalidArgument("spec.registration.model_name", "required; a lower-case DNS label")
    if registration.canary_weight > 100:
        raise InvalidArgument("spec.registration.canary_weight", "must be within 0..100")
    if registration.alias and (
        not NAME_PATTERN.match(registration.alias) or registration.alias.isdigit()
    ):
        raise InvalidArgument("spec.registration.alias", "a lower-case DNS label, not a number")


def _resolve_architecture(spec: trainer_pb2.JobSpec) -> None:
    arch = spec.architecture
    for name in ("num_layers", "num_heads", "hidden_size", "max_positions"):
        if not getattr(arch, name):
            setattr(arch, name, getattr(DEFAULT_ARCH, name))
    if arch.HasField("dropout") and not 0 <= arch.dropout < 1:
        raise InvalidArgument("spec.architecture.dropout", "must be within [0, 1)")
    if arch.num_layers > 48:
        raise InvalidArgument("spec.architecture.num_layers", "must be within 1..48")
    if arch.hidden_size % arch.num_heads:
        raise InvalidArgument("spec.architecture.hidden_size", "must be a multiple of num_heads")
    if arch.hidden_size > 8192 or arch.max_positions > 65536:
        raise InvalidArgument("spec.architecture", "hidden_size/max_positions too large")


def _resolve_hyperparameters(spec: trainer_pb2.JobSpec) -> None:
    hp = spec.hyperparameters
    if hp.learning_rate == 0:
        hp.learning_rate = 5e-4
    if not (0 < hp.learning_rate <= 1) or not math.isfinite(hp.learning_rate):
        raise InvalidArgument("spec.hyperparameters.learning_rate", "must be within (0, 1]")
    if hp.schedule == trainer_pb2.LEARNING_RATE_SCHEDULE_UNSPECIFIED:
        hp.schedule = trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE
    hp.batch_size = hp.batch_size or 8
    hp.gradient_accumulation_steps = hp.gradient_accumulation_steps or 1
    if not hp.sequence_length:
        hp.sequence_length = min(128, spec.architecture.max_positions or 128)
    if not spec.base_model and hp.sequence_length > spec.architecture.max_positions:
        raise InvalidArgument(
            "spec.hyperparameters.sequence_length", "must not exceed architecture.max_positions"
        )
    if hp.sequence_length < 2:
        raise InvalidArgument("spec.hyperparameters.sequence_length", "must be at least 2")
    if hp.batch_size > 4096 or hp.gradient_accumulation_steps > 1024:
        raise InvalidArgument("spec.hyperparameters.batch_size", "unreasonably large")
    if not hp.max_steps and not hp.epochs:
        hp.epochs = 1
    if hp.warmup_steps and hp.max_steps and hp.warmup_steps > hp.max_steps:
        raise InvalidArgument("spec.hyperparameters.warmup_steps", "must not exceed max_steps")
    if hp.gradient_clip_norm < 0 or not math.isfinite(hp.gradient_clip_norm):
        raise InvalidArgument("spec.hyperparameters.gradient_clip_norm", "must be >= 0")
    if not 0 <= hp.weight_decay <= 1:
        raise InvalidArgument("spec.hyperparameters.weight_decay", "must be within 0..1")


def _resolve_distributed(spec: trainer_pb2.JobSpec, limits: MachineLimits) -> None:
    dist = spec.distributed
    dist.processes_per_node = dist.processes_per_node or 1
    dist.nodes = dist.nodes or 1
    if dist.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_UNSPECIFIED:
        dist.strategy = trainer_pb2.DISTRIBUTED_STRATEGY_DDP
    if dist.strategy not in trainer_pb2.DistributedStrategy.values():
        names = ", ".join(
            n.removeprefix("DISTRIBUTED_STRATEGY_")
            for n in trainer_pb2.DistributedStrategy.keys()[1:]
        )
        raise InvalidArgument(
            "spec.distributed.strategy", f"unknown strategy {dist.strategy}; one of {names}"
        )
    _resolve_mesh(spec)
    if dist.backend == trainer_pb2.DISTRIBUTED_BACKEND_UNSPECIFIED:
        dist.backend = (
            trainer_pb2.DISTRIBUTED_BACKEND_NCCL
            if limits.gpus
            else trainer_pb2.DISTRIBUTED_BACKEND_GLOO
        )
    if dist.nodes > limits.max_nodes:
        raise FailedPrecondition(
            f"{dist.nodes} nodes: this trainer runs jobs of at most {limits.max_nodes} "
            "(max_nodes); larger multi-node jobs run under a cluster launcher "
            "(Kubeflow PyTorchJob)"
        )
    if dist.processes_per_node * (1 if limits.cluster else dist.nodes) > (
        limits.max_processes_per_node
    ):
        raise FailedPrecondition(
            f"processes_per_node {dist.processes_per_node} x nodes {dist.nodes} exceeds what "
            f"this machine can run ({limits.max_processes_per_node})"
        )
    if dist.backend == trainer_pb2.DISTRIBUTED_BACKEND_NCCL:
        if not limits.gpus:
            raise FailedPrecondition("backend NCCL needs GPUs; this machine has none (use GLOO)")
        if dist.processes_per_node > limits.gpus:
            raise FailedPrecondition(
                f"NCCL needs one GPU per process: {dist.processes_per_node} > {limits.gpus}"
            )


def _resolve_mesh(spec: trainer_pb2.JobSpec) -> None:
    """Model-parallel layouts must tile the process count and the model exactly."""
    dist, arch = spec.distributed, spec.architecture
    world = dist.processes_per_node * dist.nodes
    strategy = dist.strategy
    if strategy not in MODEL_PARALLEL:
        if dist.tensor_parallel_size or dist.pipeline_micro_batches or dist.pipeline_schedule:
            raise InvalidArgument(
                "spec.distributed.tensor_parallel_size",
                "only TENSOR_PARALLEL, PIPELINE_PARALLEL and HYBRID take a mesh",
            )
        return
    name = trainer_pb2.DistributedStrategy.Name(strategy).removeprefix("DISTRIBUTED_STRATEGY_")
    if spec.base_model:
        raise InvalidArgument(
            "spec.distributed.strategy", f"{name} trains from an architecture, not a base model"
        )
    if strategy == trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL:
        if dist.tensor_parallel_size:
            raise InvalidArgument(
                "spec.distributed.tensor_parallel_size", "PIPELINE_PARALLEL has no TP dimension"
            )
        if world < 2 or arch.num_layers < world:
            raise InvalidArgument(
                "spec.distributed",
                f"PIPELINE_PARALLEL needs 2..num_layers ({arch.num_layers}) stages, "
                f"got {world} process(es)",
            )
        if spec.hyperparameters.gradient_accumulation_steps > 1:
            raise InvalidArgument(
                "spec.hyperparameters.gradient_accumulation_steps",
                "PIPELINE_PARALLEL accumulates over pipeline_micro_batches instead",
            )
        dist.pipeline_micro_batches = dist.pipeline_micro_batches or 2 * world
        _resolve_schedule(dist, world)
        if spec.hyperparameters.batch_size % dist.pipeline_micro_batches:
            raise InvalidArgument(
                "spec.distributed.pipeline_micro_batches",
                f"must divide batch_size ({spec.hyperparameters.batch_size})",
            )
        return
    if dist.pipeline_micro_batches or dist.pipeline_schedule:
        raise InvalidArgument(
            "spec.distributed.pipeline_micro_batches",
            "only PIPELINE_PARALLEL takes micro-batches and a schedule",
        )
    hybrid = strategy == trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID
    tp = dist.tensor_parallel_size or (2 if hybrid else world)
    if hybrid and (world % tp or world // tp < 2):
        raise InvalidArgument(
            "spec.distributed.tensor_parallel_size",
            f"HYBRID mesh (data x tensor) must tile the {world} processes with at least 2 "
            f"data-parallel rows; tensor_parallel_size {tp} does not",
        )
    if not hybrid and tp != world:
        raise InvalidArgument(
            "spec.distributed.tensor_parallel_size",
            f"TENSOR_PARALLEL uses all {world} processes as one group; got {tp} "
            "(use HYBRID for data x tensor)",
        )
    if tp < 2:
        raise InvalidArgument("spec.distributed", f"{name} needs at least 2 tensor-parallel ranks")
    if arch.num_heads % tp:
        raise InvalidArgument(
            "spec.architecture.num_heads",
            f"{arch.num_heads} attention heads do not divide across {tp} tensor-parallel ranks",
        )
    dist.tensor_parallel_size = tp


def _resolve_alerts(spec: trainer_pb2.JobSpec) -> None:
    alerts = spec.alerts
    if alerts.non_finite == trainer_pb2.ALERT_ACTION_UNSPECIFIED:
        alerts.non_finite = trainer_pb2.ALERT_ACTION_STOP
    for name in ("gradient_explosion", "divergence", "overfitting"):
        if getattr(alerts, name) == trainer_pb2.ALERT_ACTION_UNSPECIFIED:
            setattr(alerts, name, trainer_pb2.ALERT_ACTION_WARN)
    alerts.explosion_factor = alerts.explosion_factor or 10.0
    alerts.divergence_factor = alerts.divergence_factor or 4.0
    alerts.overfitting_patience = alerts.overfitting_patience or 3
    if alerts.explosion_factor <= 1 or alerts.divergence_factor <= 1:
        raise InvalidArgument("spec.alerts", "explosion_factor and divergence_factor must be > 1")
    alerts.gradient_norm_ceiling = alerts.gradient_norm_ceiling or 1e4
    alerts.lr_reduction_factor = alerts.lr_reduction_factor or 0.5
    alerts.alert_cooldown_steps = alerts.alert_cooldown_steps or 50
    if not (0 < alerts.lr_reduction_factor < 1):
        raise InvalidArgument("spec.alerts.lr_reduction_factor", "must be within (0, 1)")
    if not (alerts.gradient_norm_ceiling > 0 and math.isfinite(alerts.gradient_norm_ceiling)):
        raise InvalidArgument("spec.alerts.gradient_norm_ceiling", "must be a positive number")
    for name in ("non_finite", "gradient_explosion", "divergence", "overfitting"):
        if getattr(alerts, name) not in trainer_pb2.AlertAction.values():
            raise InvalidArgument(f"spec.alerts.{name}", "unknown alert action")
    gate = spec.max_validation_loss
    if gate < 0 or not math.isfinite(gate):
        raise InvalidArgument("spec.max_validation_loss", "must be a finite number >= 0")


def _check_dataset(spec: trainer_pb2.JobSpec, dataset: DatasetFiles) -> None:
    meta = json.loads(dataset.read_text("meta.json"))
    kind = meta.get("tokenizer_kind", "")
    is_bert = spec.family == trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM
    if not spec.base_model and is_bert != (kind == "TOKENIZER_KIND_WORDPIECE"):
        raise FailedPrecondition(
            f"dataset {spec.dataset_id} has a {kind} tokenizer; "
            + ("BERT needs WORDPIECE" if is_bert else "GPT-2 needs BYTE_LEVEL_BPE")
        )
    hp = spec.hyperparameters
    size = _dtype_size(meta["dtype"])
    train_blocks = dataset.size("train.bin") // size // hp.sequence_length
    needed = (
        spec.distributed.processes_per_node
        * spec.distributed.nodes
        * hp.batch_size
        * hp.gradient_accumulation_steps
    )
    if train_blocks < needed:
        raise FailedPrecondition(
            f"dataset {spec.dataset_id} has {train_blocks} training blocks of "
            f"{hp.sequence_length} tokens; one step needs {needed}"
        )
    val_blocks = dataset.size("validation.bin") // size // hp.sequence_length
    if val_blocks < 1:
        raise FailedPrecondition(
            f"dataset {spec.dataset_id} has no validation block of {hp.sequence_length} tokens"
        )


def lookup_dataset(store, dataset_id: str, caller: Caller) -> Path | None:
    """The dataset's directory if it exists for this caller (another tenant's does not)."""
    try:
        return store.path(store.visible(caller, dataset_id).id) if dataset_id else None
    except NotFound:
        return None


def _resolve_schedule(dist: trainer_pb2.DistributedConfig, stages: int) -> None:
    if dist.pipeline_schedule == trainer_pb2.PIPELINE_SCHEDULE_UNSPECIFIED:
        dist.pipeline_schedule = trainer_pb2.PIPELINE_SCHEDULE_GPIPE
    if dist.pipeline_schedule not in trainer_pb2.PipelineSchedule.values():
        raise InvalidArgument(
            "spec.distributed.pipeline_schedule",
            f"unknown schedule {dist.pipeline_schedule}; one of GPIPE, 1F1B",
        )
    if (
        dist.pipeline_schedule == trainer_pb2.PIPELINE_SCHEDULE_1F1B
        and dist.pipeline_micro_batches < stages
    ):
        raise InvalidArgument(
            "spec.distributed.pipeline_micro_batches",
            f"1F1B needs at least one micro-batch per stage ({stages})",
        )
