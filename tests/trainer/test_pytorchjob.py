"""Jobs as Kubeflow PyTorchJobs: the render (pure, checked against the CRD's
schema), and submit/watch/cancel through the official `kubernetes` client
against a stand-in API server on loopback (kube_api.py: no cluster can run
here). The end-to-end test plays the training operator by running the pods'
rendered commands as local processes, so the rendered rendezvous really trains."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploy.render_pytorchjob import main as render_cli
from lattice.errors import AlreadyExists, FailedPrecondition, Unavailable
from lattice.v1 import registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer.jobs.kube import PyTorchJobs
from services.trainer.jobs.pytorchjob import ClusterJob, ClusterPolicy, render, resource_name
from services.trainer.server import build_server as build_trainer
from tests.support.identity import caller_channel

from . import kube_api
from .conftest import docstring_spec, tiny_gpt2_job, trainer_settings, wait_for_job

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "deploy/k8s/training/pytorchjob.schema.json").read_text())
POLICY = ClusterPolicy(image="registry.example.com/lattice/trainer:0.1.0")
GPU_JOB = ClusterJob(
    job_id="job-0123456789ab",
    job_dir="/var/lib/lattice/trainer/jobs/job-0123456789ab",
    attempt=2,
    nodes=3,
    processes_per_node=8,
    gpus_per_node=8,
)


def container(obj: dict, role: str) -> dict:
    (found,) = obj["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"]
    return found


def test_render_is_a_master_and_workers_meeting_by_c10d_at_the_masters_address():
    obj = render(GPU_JOB, POLICY)
    jsonschema.Draft202012Validator(SCHEMA).validate(obj)  # strict: unknown fields fail
    name = "lattice-job-0123456789ab-a2"
    assert obj["metadata"]["name"] == name and obj["metadata"]["namespace"] == "lattice"
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert {r: s["replicas"] for r, s in replicas.items()} == {"Master": 1, "Worker": 2}
    assert obj["spec"]["nprocPerNode"] == "8"
    assert obj["spec"]["runPolicy"]["backoffLimit"] == 0  # the trainer restarts attempts
    for role in ("Master", "Worker"):
        pod = container(obj, role)
        assert pod["name"] == "pytorch" and pod["image"] == POLICY.image
        argv = pod["command"]
        assert argv[:3] == ["python", "-m", "services.trainer.worker.launch"]
        flags = dict(zip(argv[3:-4:2], argv[4:-4:2], strict=True))
        assert flags == {
            "--nproc-per-node": "8",
            "--max-restarts": "0",
            "--nnodes": "3",
            "--rdzv-backend": "c10d",
            "--rdzv-endpoint": "$(MASTER_ADDR):$(MASTER_PORT)",
            "--rdzv-id": name,
        }
        # The spec travels as it does locally: job.json in the shared job directory.
        assert argv[-4:] == ["-m", "services.trainer.worker", "--job-dir", GPU_JOB.job_dir]
        assert pod["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert pod["ports"] == [{"name": "pytorchjob-port", "containerPort": 29400}]
        mounts = {m["name"]: m["mountPath"] for m in pod["volumeMounts"]}
        assert mounts["data"] == "/var/lib/lattice"
        env = {e["name"]: e["value"] for e in pod["env"]}
        assert env["LATTICE_TRAINER_JOB_ID"] == GPU_JOB.job_id and env["HF_HUB_OFFLINE"] == "1"
        labels = replicas[role]["template"]["metadata"]["labels"]
        assert labels["lattice.dev/training-job"] == "true"  # NetworkPolicy peers


def test_one_cpu_node_is_a_master_alone_without_gpus():
    obj = render(
        dataclasses.replace(GPU_JOB, nodes=1, gpus_per_node=0, processes_per_node=2), POLICY
    )
    jsonschema.Draft202012Validator(SCHEMA).validate(obj)
    assert list(obj["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    pod = container(obj, "Master")
    assert "nvidia.com/gpu" not in pod["resources"]["limits"]
    assert "tolerations" not in obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]


def test_names_are_valid_distinct_and_leave_room_for_pod_suffixes():
    names = {resource_name(i, 1) for i in ("Job_1", "job-1", "x" * 200)}
    assert len(names) == 3
    for name in names:
        assert len(name + "-worker-999") <= 63 and name == name.lower()
    assert resource_name("job-1", 1) != resource_name("job-1", 2)


@pytest.mark.parametrize(
    ("job", "policy", "message"),
    [
        ({"job_dir": "/tmp/jobs/x"}, {}, "shared volume"),
        ({"job_dir": "relative/x"}, {}, "shared volume"),
        ({"processes_per_node": 16}, {}, "16 processes per node on 8 GPU"),
        ({}, {"memory": "lots"}, "quantity"),
        ({}, {"image": ""}, "pytorchjob_image"),
        ({"job_id": ""}, {}, "empty"),
    ],
)
def test_what_cannot_run_is_refused_with_the_reason(job, policy, message):
    with pytest.raises(ValueError, match=message):
        render(dataclasses.replace(GPU_JOB, **job), dataclasses.replace(POLICY, **policy))


def test_cli_prints_the_same_object_as_yaml_and_refuses_bad_input(capsys):
    args = ["--job-id", GPU_JOB.job_id, "--job-dir", GPU_JOB.job_dir, "--image", POLICY.image]
    gpu = ["--attempt", "2", "--nodes", "3", "--procs-per-node", "8", "--gpus-per-node", "8"]
    assert render_cli([*args, *gpu]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == render(GPU_JOB, POLICY)
    assert render_cli([*args, "--memory", "lots"]) == 2
    assert "quantity" in capsys.readouterr().err


# -- the client against the stand-in API server ----------------------------------------------


@pytest.fixture
def api(tmp_path):
    with kube_api.running() as server:
        yield server


def jobs_for(api, tmp_path, token=None) -> PyTorchJobs:
    config = api.kubeconfig(tmp_path / "kubeconfig", token)
    return PyTorchJobs.connect(str(config), "lattice", watch_seconds=2)


def test_create_watch_until_succeeded_then_delete(api, tmp_path):
    jobs = jobs_for(api, tmp_path)
    obj = render(GPU_JOB, POLICY)
    jobs.create(obj)
    name = obj["metadata"]["name"]
    stored = api.objects[("lattice", name)]
    assert stored["spec"] == obj["spec"]
    heard: list[str] = []
    result: list = []
    waiter = threading.Thread(
        target=lambda: result.append(
            jobs.wait(name, threading.Event(), lambda c: heard.append(c[-1]["type"]))
        )
    )
    waiter.start()
    api.wait_for(lambda: api.watches >= 1)
    api.set_condition("lattice", name, "Created")
    api.set_condition("lattice", name, "Running")
    api.set_condition("lattice", name, "Succeeded", "all pods finished")
    waiter.join(10)
    assert result[0].state == "Succeeded" and result[0].message == "all pods finished"
    assert heard[-1] == "Succeeded" and "Running" in heard
    assert jobs.names_for("job-0123456789ab") == [name]
    assert jobs.delete(name) is True and jobs.delete(name) is False
    assert jobs.get(name) is None


def test_a_deleted_job_ends_the_watch(api, tmp_path):
    jobs = jobs_for(api, tmp_path)
    obj = render(GPU_JOB, POLICY)
    jobs.create(obj)
    result: list = []
    waiter = threading.Thread(
        target=lambda: result.append(jobs.wait(obj["metadata"]["name"], threading.Event()))
    )
    waiter.start()
    api.wait_for(lambda: api.watches >= 1)
    jobs.delete(obj["metadata"]["name"])
    waiter.join(10)
    assert result[0].state == "Deleted"


def test_api_refusals_become_errors_that_say_what_to_do(api, tmp_path):
    jobs = jobs_for(api, tmp_path)
    obj = render(GPU_JOB, POLICY)
    api.forbidden = {"create"}
    with pytest.raises(
        FailedPrecondition, match=r"HTTP 403.*cannot create.*Role trainer-pytorchjobs"
    ):
        jobs.create(obj)
    api.forbidden = set()
    jobs.create(obj)
    with pytest.raises(AlreadyExists, match="already exists in namespace lattice"):
        jobs.create(obj)
    api.crd_installed = False
    with pytest.raises(FailedPrecondition, match="training operator installed"):
        jobs.create(render(dataclasses.replace(GPU_JOB, attempt=3), POLICY))
    api.crd_installed = True
    with pytest.raises(FailedPrecondition, match="HTTP 401"):
        jobs_for(api, tmp_path, token="stolen").get("x")


def test_an_api_server_out_of_reach_is_unavailable(tmp_path):
    with kube_api.running() as gone:
        config = gone.kubeconfig(tmp_path / "kubeconfig")
    jobs = PyTorchJobs.connect(str(config), "lattice")
    with pytest.raises(Unavailable, match="unreachable"):
        jobs.create(render(GPU_JOB, POLICY))


# -- the trainer with launcher=pytorchjob ------------------------------------------------------


@pytest.fixture
async def cluster_trainer(tmp_path, registry_server, api):
    settings = trainer_settings(
        tmp_path / "trainer-data",
        registry_server.address,
        launcher="pytorchjob",
        pytorchjob_image="lattice/trainer:test",
        pytorchjob_kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig")),
        pytorchjob_watch_seconds=2,
        max_nodes=2,
        max_processes_per_node=1,
        max_attempts=2,
    )
    server = await build_trainer(settings)
    await server.start()
    async with caller_channel(server) as channel:
        yield trainer_pb2_grpc.TrainerServiceStub(channel)
    await server.stop(0)


async def created(api, count: int = 1) -> dict:
    await asyncio.to_thread(api.wait_for, lambda: len(api.objects) >= count, 60)
    return list(api.objects.values())[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_pods(obj: dict) -> int:
    """The operator and kubelet's part: start every replica's container command
    with MASTER_ADDR/MASTER_PORT set, here as local processes."""
    port = str(free_port())
    processes = []
    for role, replica in obj["spec"]["pytorchReplicaSpecs"].items():
        (pod,) = replica["template"]["spec"]["containers"]
        env = {**os.environ, **{e["name"]: e["value"] for e in pod["env"]}}
        env.pop("HF_HOME")  # the pod's /tmp; here the test's environment
        argv = [
            a.replace("$(MASTER_ADDR)", "127.0.0.1").replace("$(MASTER_PORT)", port)
            for a in pod["command"]
        ]
        argv[0] = sys.executable
        for _ in range(replica["replicas"]):
            processes.append(subprocess.Popen(argv, env=env, cwd=ROOT))
        assert role in ("Master", "Worker")
    return max(p.wait(timeout=300) for p in processes)


@pytest.mark.slow
async def test_a_two_node_job_runs_as_a_pytorchjob_and_registers(cluster_trainer, api, registry):
    trainer = cluster_trainer
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    spec = tiny_gpt2_job(
        dataset.id, "cluster-gpt", hyperparameters__max_steps=6, distributed__nodes=2
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    obj = await created(api)
    name = obj["metadata"]["name"]
    assert name == resource_name(job.id, 1)
    api.set_condition("lattice", name, "Running")
    code = await asyncio.to_thread(run_pods, obj)
    api.set_condition("lattice", name, "Succeeded" if code == 0 else "Failed", f"exit {code}")
    job = await wait_for_job(trainer, job.id, timeout=120)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    logs = [e.log async for e in stream if e.HasField("log")]
    assert any(f"PyTorchJob {name}: Running" in line for line in logs), logs
    assert any("on 2 process(es)" in line for line in logs), logs
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="cluster-gpt"))
    ).versions
    assert version.version == 1


async def test_a_failed_pytorchjob_is_retried_as_a_new_attempt_then_fails_the_job(
    cluster_trainer, api
):
    trainer = cluster_trainer
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    job = (
        await trainer.SubmitJob(
            trainer_pb2.SubmitJobRequest(spec=tiny_gpt2_job(dataset.id, "retried"))
        )
    ).job
    for attempt in (1, 2):
        obj = await created(api, attempt)
        assert obj["metadata"]["name"] == resource_name(job.id, attempt)
        api.set_condition("lattice", obj["metadata"]["name"], "Failed", "pod OOMKilled")
    job = await wait_for_job(trainer, job.id, timeout=60)
    assert job.state == trainer_pb2.JOB_STATE_FAILED and job.attempts == 2
    assert "failed: pod OOMKilled" in job.error


async def test_cancel_deletes_the_pytorchjob(cluster_trainer, api):
    trainer = cluster_trainer
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    job = (
        await trainer.SubmitJob(
            trainer_pb2.SubmitJobRequest(spec=tiny_gpt2_job(dataset.id, "cancelled"))
        )
    ).job
    obj = await created(api)
    api.set_condition("lattice", obj["metadata"]["name"], "Running")
    job = (await trainer.CancelJob(trainer_pb2.CancelJobRequest(job_id=job.id))).job
    assert job.state == trainer_pb2.JOB_STATE_CANCELLED
    assert (
        "DELETE",
        f"/apis/kubeflow.org/v1/namespaces/lattice/pytorchjobs/{obj['metadata']['name']}",
    ) in api.requests
    assert not api.objects


async def test_a_forbidden_submission_fails_the_job_with_the_fix_not_an_internal_error(
    cluster_trainer, api
):
    trainer = cluster_trainer
    api.forbidden = {"create"}
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    job = (
        await trainer.SubmitJob(
            trainer_pb2.SubmitJobRequest(spec=tiny_gpt2_job(dataset.id, "forbidden"))
        )
    ).job
    job = await wait_for_job(trainer, job.id, timeout=60)
    assert job.state == trainer_pb2.JOB_STATE_FAILED
    assert "Role trainer-pytorchjobs" in job.error and "internal" not in job.error
