"""The PyTorchJob renderer the trainer calls in cluster mode, and its submit()."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from deploy.render_pytorchjob import ClusterJob, main, render, resource_name, submit

JOB = ClusterJob(
    job_id="gpt2-ft-7",
    job_dir="/var/lib/lattice/trainer/jobs/gpt2-ft-7",
    job_spec_json='{"job_id": "gpt2-ft-7"}',
    image="registry.example.com/lattice/trainer:0.1.0",
    min_workers=2,
    max_workers=4,
    procs_per_worker=8,
    gpus_per_worker=8,
)


def test_render_fills_the_template_for_an_elastic_c10d_torchrun_job():
    config_map, job = render(JOB)
    assert config_map["kind"] == "ConfigMap" and config_map["data"]["job.json"] == JOB.job_spec_json
    assert job["kind"] == "PyTorchJob" and job["apiVersion"] == "kubeflow.org/v1"
    assert job["metadata"]["name"] == config_map["metadata"]["name"] == "lattice-job-gpt2-ft-7"
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8"
    elastic = {"rdzvBackend": "c10d", "minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3}
    assert spec["elasticPolicy"].items() >= elastic.items()
    worker = spec["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 4
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"
    assert container["command"][:4] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--rdzv-backend=c10d",
    ]
    assert container["command"][-4:] == [
        "--module",
        "services.trainer.worker",
        "--job-dir",
        JOB.job_dir,
    ]
    assert container["command"][-2:] == ["--job-dir", JOB.job_dir]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["job-spec"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "training-data"
    labels = worker["template"]["metadata"]["labels"]
    assert labels["lattice.dev/training-job"] == "true"  # NetworkPolicy training-workers-peer


def test_cpu_job_asks_for_no_gpu_and_names_stay_valid_and_distinct():
    _, job = render(dataclasses.replace(JOB, gpus_per_worker=0, procs_per_worker=2))
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    a, b = resource_name("Job_1"), resource_name("job-1")
    assert a != b and len(resource_name("x" * 200)) <= 63
    assert all(c.isalnum() or c == "-" for c in a) and a == a.lower()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job_dir": "/tmp/jobs/x"}, "shared volume"),
        ({"job_dir": "relative/x"}, "shared volume"),
        ({"min_workers": 5}, "min_workers"),
        ({"procs_per_worker": 16}, "more processes than GPUs"),
        ({"memory": "lots"}, "quantity"),
        ({"job_spec_json": "{not json"}, "not JSON"),
        ({"job_id": ""}, "empty"),
    ],
)
def test_bad_jobs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        render(dataclasses.replace(JOB, **change))


def test_cli_prints_yaml_for_kubectl_and_refuses_bad_input(tmp_path, capsys):
    spec = tmp_path / "job.json"
    spec.write_text(JOB.job_spec_json)
    args = [
        "--job-id",
        "j1",
        "--job-dir",
        "/var/lib/lattice/trainer/jobs/j1",
        "--spec",
        str(spec),
        "--image",
        JOB.image,
    ]
    assert main(args) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ConfigMap", "PyTorchJob"]
    assert main([*args, "--min-workers", "3"]) == 2
    assert "min_workers" in capsys.readouterr().err


class _StandInApiServer(BaseHTTPRequestHandler):
    """A stand-in for kube-apiserver (no cluster here): records POSTs, answers 201."""

    calls: list[tuple[str, str, dict]] = []
    status = 201

    def do_POST(self):  # http.server calls do_<METHOD>
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers["Authorization"], body))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"reason": "AlreadyExists"}')

    def log_message(self, *args):
        pass


def test_submit_posts_configmap_then_job_with_the_token_and_reports_refusals():
    server = HTTPServer(("127.0.0.1", 0), _StandInApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        objects = render(JOB)
        submit(objects, api_server=url, token="t0k")
        paths = [(p, auth) for p, auth, _ in _StandInApiServer.calls]
        assert paths == [
            ("/api/v1/namespaces/lattice/configmaps", "Bearer t0k"),
            ("/apis/kubeflow.org/v1/namespaces/lattice/pytorchjobs", "Bearer t0k"),
        ]
        assert _StandInApiServer.calls[1][2] == objects[1]
        _StandInApiServer.status = 409
        with pytest.raises(RuntimeError, match=r"HTTP 409.*AlreadyExists"):
            submit(objects, api_server=url, token="t0k")
    finally:
        server.shutdown()
        thread.join()
