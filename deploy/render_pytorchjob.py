"""Render (and optionally submit) a Kubeflow PyTorchJob for one training job.

The trainer's cluster mode calls this instead of starting torchrun itself:

    objects = render(ClusterJob(job_id=..., job_dir=..., job_spec_json=..., image=...))
    submit(objects)            # in the trainer pod: its service account token

`render` fills deploy/k8s/training/pytorchjob.template.yaml and returns two
objects: a ConfigMap holding the job's resolved spec (job.json, mounted
read-only into every worker) and the PyTorchJob. The job directory must be
on the shared volume (`SHARED_ROOT`) that the trainer and all workers mount.
Operators can do the same by hand:

    python deploy/render_pytorchjob.py --job-id j1 --job-dir /var/lib/lattice/trainer/jobs/j1 \
        --spec job.json --image registry.example.com/lattice/trainer:0.1.0 | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent / "k8s" / "training" / "pytorchjob.template.yaml"
#: Where the ReadWriteMany claim `training-data` is mounted in trainer and workers.
SHARED_ROOT = PurePosixPath("/var/lib/lattice")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?$")


@dataclasses.dataclass(frozen=True)
class ClusterJob:
    """What varies per job; everything else is policy in the template."""

    job_id: str
    #: Absolute path of the job directory, under SHARED_ROOT.
    job_dir: str
    #: The job.json the worker reads (services.trainer.worker.config).
    job_spec_json: str
    image: str
    namespace: str = "lattice"
    #: Elastic range of worker pods; the job starts once min_workers joined.
    min_workers: int = 1
    max_workers: int = 1
    #: torchrun processes per pod (one per GPU on GPU nodes).
    procs_per_worker: int = 1
    gpus_per_worker: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    #: Restarts of the whole worker group (torchrun --max-restarts).
    max_restarts: int = 3
    worker_module: str = "services.trainer.worker"


def resource_name(job_id: str) -> str:
    """A DNS-1123 name for the job (a hash keeps distinct ids distinct)."""
    clean = _DNS_LABEL.sub("-", job_id.lower()).strip("-")
    if clean == job_id and len(clean) <= 40:
        return f"lattice-job-{clean}"
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return f"lattice-job-{clean[:30].strip('-') or 'x'}-{digest}"


def _check(job: ClusterJob) -> None:
    if not job.job_id:
        raise ValueError("job_id is empty")
    job_dir = PurePosixPath(job.job_dir)
    if not job_dir.is_absolute() or SHARED_ROOT not in job_dir.parents:
        raise ValueError(f"job_dir {job.job_dir!r} must be under the shared volume {SHARED_ROOT}")
    if not 1 <= job.min_workers <= job.max_workers:
        raise ValueError(
            f"need 1 <= min_workers <= max_workers, got {job.min_workers}..{job.max_workers}"
        )
    if job.procs_per_worker < 1 or job.gpus_per_worker < 0 or job.max_restarts < 0:
        raise ValueError("procs_per_worker >= 1, gpus_per_worker >= 0 and max_restarts >= 0")
    if job.gpus_per_worker and job.procs_per_worker > job.gpus_per_worker:
        raise ValueError("more processes than GPUs per worker")
    for name in ("cpu", "memory"):
        if not _QUANTITY.match(getattr(job, name)):
            raise ValueError(f"{name} {getattr(job, name)!r} is not a Kubernetes quantity")
    try:
        json.loads(job.job_spec_json)
    except ValueError as exc:
        raise ValueError(f"job_spec_json is not JSON: {exc}") from None


def render(job: ClusterJob, template: Path = TEMPLATE) -> list[dict[str, Any]]:
    """The ConfigMap with job.json and the PyTorchJob, as plain dicts."""
    _check(job)
    name = resource_name(job.job_id)
    labels = {
        "app.kubernetes.io/part-of": "lattice",
        "app.kubernetes.io/component": "training",
        "lattice.dev/job-id": name.removeprefix("lattice-job-"),
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": job.namespace, "labels": labels},
        "data": {"job.json": job.job_spec_json},
    }
    pj = copy.deepcopy(yaml.safe_load(template.read_text()))
    pj["metadata"].update(name=name, namespace=job.namespace)
    pj["metadata"]["labels"].update(labels)
    spec = pj["spec"]
    spec["nprocPerNode"] = str(job.procs_per_worker)
    spec["elasticPolicy"].update(
        minReplicas=job.min_workers, maxReplicas=job.max_workers, maxRestarts=job.max_restarts
    )
    worker = spec["pytorchReplicaSpecs"]["Worker"]
    worker["replicas"] = job.max_workers
    pod = worker["template"]
    pod["metadata"]["labels"].update(labels)
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "pytorch"]
    container["image"] = job.image
    container["command"] = [
        "python",
        "-m",
        "torch.distributed.run",
        "--rdzv-backend=c10d",
        "--module",
        job.worker_module,
        "--job-dir",
        job.job_dir,
    ]
    resources: dict[str, Any] = {"cpu": job.cpu, "memory": job.memory}
    if job.gpus_per_worker:
        resources["nvidia.com/gpu"] = job.gpus_per_worker
        pod["spec"].setdefault("tolerations", []).append(
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        )
    container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    for volume in pod["spec"]["volumes"]:
        if volume["name"] == "job-spec":
            volume["configMap"]["name"] = name
    return [config_map, pj]


def to_yaml(objects: Sequence[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def _paths(obj: dict[str, Any]) -> str:
    ns = obj["metadata"]["namespace"]
    if obj["kind"] == "ConfigMap":
        return f"/api/v1/namespaces/{ns}/configmaps"
    return f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"


def submit(
    objects: Sequence[dict[str, Any]],
    *,
    api_server: str | None = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> None:
    """Create the objects through the Kubernetes API (in-cluster by default).

    In the trainer pod the service account `trainer` (Role trainer-pytorchjobs)
    is used: its token and CA are mounted at SERVICE_ACCOUNT.
    """
    if api_server is None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        api_server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        context = context or ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    if token is None:
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
    for obj in objects:
        request = urllib.request.Request(
            api_server.rstrip("/") + _paths(obj),
            data=json.dumps(obj).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RuntimeError(
                f"creating {obj['kind']} {obj['metadata']['name']}: HTTP {exc.code}: {detail}"
            ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a Lattice PyTorchJob as YAML.")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--spec", required=True, type=Path, help="the job's job.json")
    parser.add_argument("--image", required=True)
    parser.add_argument("--namespace", default="lattice")
    parser.add_argument("--min-workers", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument("--procs-per-worker", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=int, default=0)
    parser.add_argument("--cpu", default="4")
    parser.add_argument("--memory", default="16Gi")
    args = parser.parse_args(argv)
    job = ClusterJob(
        job_id=args.job_id,
        job_dir=args.job_dir,
        job_spec_json=args.spec.read_text(),
        image=args.image,
        namespace=args.namespace,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        procs_per_worker=args.procs_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        cpu=args.cpu,
        memory=args.memory,
    )
    try:
        sys.stdout.write(to_yaml(render(job)))
    except ValueError as exc:
        print(f"render_pytorchjob: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
