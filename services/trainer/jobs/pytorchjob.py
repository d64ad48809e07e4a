"""One training attempt as a Kubeflow PyTorchJob (`kubeflow.org/v1`): a pure render.

The local launcher runs `torchrun ... -m services.trainer.worker --job-dir DIR`
on this host; on a cluster every node of the job is a pod running the same
command. The Master pod (replica 0) and `nodes - 1` Worker pods meet by c10d
rendezvous at the Master's address: the training operator gives every pod
`MASTER_ADDR` and `MASTER_PORT` (the port named `pytorchjob-port`), which
Kubernetes substitutes into the command's `$(MASTER_ADDR):$(MASTER_PORT)`.

The job's spec travels exactly as it does locally: the trainer writes
`job.json` into the job directory on the ReadWriteMany claim that it and every
pod mount at the same path (its data directory), and the pods read it from
`--job-dir`. Events, checkpoints, the export and `result.json` come back the
same way, so the trainer supervises a PyTorchJob as it does a local torchrun.

Restarts belong to the trainer (one PyTorchJob per attempt, resuming from the
last checkpoint), so the pods never restart and torchrun gets
`--max-restarts 0`, as locally. Only the standard library is imported here:
`deploy/render_pytorchjob.py` renders in the deploy checks' tools venv.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import PurePosixPath
from typing import Any

from services.trainer.jobs.rendezvous import LAUNCHER, c10d_args

API_VERSION = "kubeflow.org/v1"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
#: The port the operator reads MASTER_PORT from (by this name); NetworkPolicy
#: training-workers-peer lets the job's pods reach each other on it.
RENDEZVOUS_PORT = 29400
WORKER_MODULE = "services.trainer.worker"
JOB_LABEL = "lattice.dev/job-id"
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?$")


@dataclasses.dataclass(frozen=True)
class ClusterPolicy:
    """What every job's pods share (trainer settings `pytorchjob_*`)."""

    image: str
    namespace: str = "lattice"
    #: Requests and limits per pod (one pod per node of the job).
    cpu: str = "4"
    memory: str = "16Gi"
    #: The ReadWriteMany claim with datasets and job directories, and where the
    #: trainer mounts it (its data directory); pods mount it at the same path.
    data_claim: str = "training-data"
    data_mount: str = "/var/lib/lattice"
    worker_module: str = WORKER_MODULE


@dataclasses.dataclass(frozen=True)
class ClusterJob:
    """What varies per attempt."""

    job_id: str
    #: Absolute path of the job directory, under ClusterPolicy.data_mount.
    job_dir: str
    attempt: int = 1
    nodes: int = 1
    processes_per_node: int = 1
    #: GPUs per pod (NCCL jobs: one per process); 0 = none asked.
    gpus_per_node: int = 0


def resource_name(job_id: str, attempt: int) -> str:
    """A DNS-1123 name per attempt (a hash keeps distinct ids distinct). Pods are
    named after it plus "-master-0"/"-worker-N", so it stays well under 63."""
    clean = _DNS_LABEL.sub("-", job_id.lower()).strip("-")
    if clean != job_id or len(clean) > 30:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
        clean = f"{clean[:20].strip('-') or 'x'}-{digest}"
    return f"lattice-{clean}-a{attempt}"


def job_label(job_id: str) -> str:
    """The value of JOB_LABEL on every attempt of one job (finds them all)."""
    return _DNS_LABEL.sub("-", job_id.lower())[:63].strip("-") or "x"


def check(job: ClusterJob, policy: ClusterPolicy) -> None:
    """ValueError with the reason when the attempt cannot be rendered."""
    if not job.job_id:
        raise ValueError("job_id is empty")
    if not policy.image:
        raise ValueError("no trainer image to run the pods (setting pytorchjob_image)")
    mount = PurePosixPath(policy.data_mount)
    job_dir = PurePosixPath(job.job_dir)
    if not mount.is_absolute() or not job_dir.is_absolute() or mount not in job_dir.parents:
        raise ValueError(
            f"job directory {job.job_dir} is not under the shared volume's mount "
            f"{policy.data_mount}; the pods would not see it"
        )
    if job.attempt < 1 or job.nodes < 1 or job.processes_per_node < 1 or job.gpus_per_node < 0:
        raise ValueError("attempt, nodes and processes_per_node >= 1; gpus_per_node >= 0")
    if job.gpus_per_node and job.processes_per_node > job.gpus_per_node:
        raise ValueError(
            f"{job.processes_per_node} processes per node on {job.gpus_per_node} GPU(s)"
        )
    for name in ("cpu", "memory"):
        if not _QUANTITY.match(getattr(policy, name)):
            raise ValueError(f"{name} {getattr(policy, name)!r} is not a Kubernetes quantity")


def command(job: ClusterJob, policy: ClusterPolicy, name: str) -> list[str]:
    """The torchrun agent every pod runs (the local launcher's, with the Master's
    address for the rendezvous)."""
    return [
        "python",
        "-m",
        LAUNCHER,
        "--nproc-per-node",
        str(job.processes_per_node),
        "--max-restarts",
        "0",
        *c10d_args(job.nodes, "$(MASTER_ADDR):$(MASTER_PORT)", name),
        "-m",
        policy.worker_module,
        "--job-dir",
        job.job_dir,
    ]


def _pod(job: ClusterJob, policy: ClusterPolicy, name: str, labels: dict[str, str]) -> dict:
    resources: dict[str, Any] = {"cpu": policy.cpu, "memory": policy.memory}
    if job.gpus_per_node:
        resources["nvidia.com/gpu"] = job.gpus_per_node
    env = {
        "LATTICE_TRAINER_JOB_ID": job.job_id,
        "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time
        "HF_HOME": "/tmp/huggingface",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
    }
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the pods never call the API server
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "pytorch",  # the training operator requires this name
                "image": policy.image,
                "imagePullPolicy": "IfNotPresent",
                "command": command(job, policy, name),
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "ports": [{"name": "pytorchjob-port", "containerPort": RENDEZVOUS_PORT}],
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "data", "mountPath": policy.data_mount},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "dshm", "mountPath": "/dev/shm"},  # gloo/NCCL shared memory
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": policy.data_claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        ],
    }
    if job.gpus_per_node:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "metadata": {"labels": {**labels, "lattice.dev/training-job": "true"}},
        "spec": spec,
    }


def render(job: ClusterJob, policy: ClusterPolicy) -> dict[str, Any]:
    """The PyTorchJob for one attempt, as a plain dict (the API's JSON shape)."""
    check(job, policy)
    name = resource_name(job.job_id, job.attempt)
    labels = {
        "app.kubernetes.io/part-of": "lattice",
        "app.kubernetes.io/component": "training",
        JOB_LABEL: job_label(job.job_id),
    }

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "Never",
            "template": _pod(job, policy, name, labels),
        }

    replicas = {"Master": replica(1)}
    if job.nodes > 1:
        replicas["Worker"] = replica(job.nodes - 1)
    return {
        "apiVersion": API_VERSION,
        "kind": "PyTorchJob",
        "metadata": {
            "name": name,
            "namespace": policy.namespace,
            "labels": labels,
            "annotations": {"lattice.dev/attempt": str(job.attempt)},
        },
        "spec": {
            "nprocPerNode": str(job.processes_per_node),
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": 0,  # the trainer restarts from the last checkpoint
                "ttlSecondsAfterFinished": 86400,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }
