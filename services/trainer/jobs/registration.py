"""Register a finished job's export as a registry version, exactly once.

The version carries a `lattice.job_id` tag. Before creating one, the registrar
looks for a version with the job's tag, so a registration interrupted after
CreateVersion (service killed, job resumed) finds it instead of adding a
second one. The job record stores the outcome once known.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from google.protobuf import json_format

from lattice.artifacts import pack_directory, sha256_hex
from lattice.v1 import common_pb2, registry_pb2, trainer_pb2
from services.trainer.registry_client import JOB_TAG, RegistryClient, job_caller

_TASKS = {
    trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM: common_pb2.MODEL_TASK_TEXT_GENERATION,
    trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM: common_pb2.MODEL_TASK_EMBEDDING,
    trainer_pb2.MODEL_FAMILY_WORD2VEC: common_pb2.MODEL_TASK_EMBEDDING,
    trainer_pb2.MODEL_FAMILY_GLOVE: common_pb2.MODEL_TASK_EMBEDDING,
    trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION: common_pb2.MODEL_TASK_CLASSIFICATION,
}


def params_of(spec: trainer_pb2.JobSpec) -> dict[str, str]:
    """Hyper-parameters and other inputs, flattened to strings."""
    flat: dict[str, str] = {
        "family": trainer_pb2.ModelFamily.Name(spec.family),
        "dataset_id": spec.dataset_id,
    }
    if spec.base_model:
        flat["base_model"] = spec.base_model
    for prefix, message in (
        ("hp", spec.hyperparameters),
        ("arch", spec.architecture),
        ("dist", spec.distributed),
        ("words", spec.word_embedding),
    ):
        for key, value in json_format.MessageToDict(message).items():
            flat[f"{prefix}.{key}"] = str(value)
    return flat


class Registrar:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    async def register(
        self,
        job: trainer_pb2.Job,
        export_dir: Path,
        result: dict,
        dataset_digest: str,
        base: registry_pb2.ModelVersion | None,
    ) -> registry_pb2.ModelVersion:
        spec = job.spec
        target = spec.registration
        client = self.client.as_caller(job_caller(job.tenant, job.id))
        version = await client.find_by_tag(target.model_name, JOB_TAG, job.id)
        if version is None:
            await client.ensure_model(
                target.model_name, _TASKS[spec.family], f"trained by lattice trainer job {job.id}"
            )
            data = await asyncio.to_thread(pack_directory, export_dir)
            digest = sha256_hex(data)
            uri = await client.upload(data, digest)
            lineage = registry_pb2.Lineage(training_job_id=job.id, dataset_digest=dataset_digest)
            if base is not None:
                lineage.base_version = base.version
                if base.model_name != target.model_name:
                    lineage.base_model_name = base.model_name
            metrics = {
                key: float(value)
                for key, value in {
                    **result.get("metrics", {}),
                    "steps": result.get("step", 0),
                    "tokens_per_second": result.get("tokens_per_second", 0.0),
                    "train_loss": job.latest_metrics.loss,
                }.items()
                if isinstance(value, int | float) and math.isfinite(float(value))
            }
            params = {**params_of(spec), **result.get("params", {})}
            if result.get("neighbours"):
                # Nearest-neighbour samples of the evaluation, for people to judge.
                params["eval.neighbours"] = json.dumps(result["neighbours"], ensure_ascii=False)[
                    :4096
                ]
            request = registry_pb2.CreateVersionRequest(
                model_name=target.model_name,
                artifact_uri=uri,
                artifact_digest=digest,
                format=result.get("format", "ARTIFACT_FORMAT_TRANSFORMERS"),
                lineage=lineage,
                metrics=metrics,
                params=params,
                tags={JOB_TAG: job.id, "lattice.outcome": result.get("outcome", "")},
                description=spec.display_name[:1024],
            )
            version = await client.create_version(request)
        if target.alias:
            await client.set_alias(target.model_name, target.alias, version.version)
        if target.canary_weight:
            await client.canary(
                target.model_name,
                version.version,
                target.canary_weight,
                f"canary from trainer job {job.id}",
            )
        return version
