"""`lattice up`: four real service processes, reflectable with grpcurl, stopped cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from services.suite.ports import free_port
from tests.deploy.test_dashboards import dashboard_metrics

pytestmark = pytest.mark.slow

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
EXPECTED_SERVICES = {
    "gateway": {
        "lattice.v1.InferenceService",
        "lattice.v1.ModelRegistryService",
        "lattice.v1.TrainerService",
    },
    "registry": {"lattice.v1.ModelRegistryService"},
    "inference": {"lattice.v1.InferenceService"},
    "trainer": {"lattice.v1.TrainerService"},
}


class Suite:
    def __init__(
        self,
        process: subprocess.Popen[str],
        ports: dict[str, int],
        seconds: float,
        redis_port: int,
    ):
        self.process = process
        self.ports = ports
        self.redis_port = redis_port
        self.seconds_to_ready = seconds
        self.http_port = 0
        #: What `lattice up` prints after "Lattice is up" (exits, restarts).
        self.reports: list[str] = []
        threading.Thread(target=self._read_reports, daemon=True).start()

    def _read_reports(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.reports.append(line.rstrip())

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Iterator[Suite]:
    ports = {name: free_port() for name in EXPECTED_SERVICES}
    http_port = free_port()
    data_dir = tmp_path_factory.mktemp("lattice-up")
    redis_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "lattice.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--redis-port",
        str(redis_port),
        "--http-port",
        str(http_port),
        "--grace",
        "5",
    ]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # its reports ("lattice: ... exited ...") too
        text=True,
        env={**os.environ, "LATTICE_LOG_LEVEL": "WARNING"},
    )
    assert process.stdout is not None
    for line in process.stdout:  # the supervisor prints this once all four are SERVING
        if line.startswith("Lattice is up"):
            break
    else:
        pytest.fail(f"lattice up exited with {process.wait()} before becoming ready")
    suite = Suite(process, ports, time.monotonic() - started, redis_port)
    suite.http_port = http_port
    yield suite
    if process.poll() is None:
        process.kill()


def _grpcurl(*args: str) -> str:
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_up_is_ready_within_15_seconds(suite):
    assert suite.seconds_to_ready < 15


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_every_service_is_reflectable_and_healthy(suite, name):
    listed = set(_grpcurl(suite.address(name), "list").split())
    assert listed >= EXPECTED_SERVICES[name] | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    some_service = sorted(EXPECTED_SERVICES[name])[0]
    assert "rpc " in _grpcurl(suite.address(name), "describe", some_service)
    assert '"SERVING"' in _grpcurl(suite.address(name), "grpc.health.v1.Health/Check")


def _metric_names(scrape: str) -> set[str]:
    """The series names a /metrics page offers, from its # TYPE lines."""
    names: set[str] = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_dashboard_queries_only_metrics_the_services_export(suite):
    """deploy/grafana/*.json against a live scrape of each service's /metrics."""
    deadline = time.monotonic() + 10
    while len(urls := _metrics_urls(suite)) < len(EXPECTED_SERVICES):
        assert time.monotonic() < deadline, suite.reports
        time.sleep(0.1)
    exported: set[str] = set()
    for url in urls.values():
        with urllib.request.urlopen(url, timeout=10) as response:
            exported |= _metric_names(response.read().decode())
    assert "lattice_rpc_requests_total" in exported  # the scrape parsed
    missing = {
        f"{path.name}: {panel['title']}: {metric}"
        for path, panel, metric in dashboard_metrics()
        if metric not in exported
    }
    assert not missing, "\n".join(sorted(missing))


def test_gateway_answers_http_next_to_grpc(suite):
    url = f"http://127.0.0.1:{suite.http_port}"
    for path in ("/healthz", "/readyz"):
        done = subprocess.run(["curl", "-sf", url + path], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    refused = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/v1/models"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.stdout == "401"


def test_a_child_that_dies_is_restarted(suite):
    registry = next(p for p in suite.children() if "services.registry" in " ".join(p.cmdline()))
    registry.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            reply = _grpcurl(suite.address("registry"), "grpc.health.v1.Health/Check")
            replacement = [
                p for p in suite.children() if "services.registry" in " ".join(p.cmdline())
            ]
            if '"SERVING"' in reply and replacement and replacement[0].pid != registry.pid:
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.3)
    pytest.fail("the registry was not restarted")


def _running_services(suite: Suite) -> dict[str, psutil.Process]:
    """The supervisor's live service children by name (a restarting one is absent)."""
    found = {}
    for process in suite.children():
        try:
            command = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        for name in EXPECTED_SERVICES:
            if f"services.{name}" in command:
                found[name] = process
    return found


def test_metrics_ports_are_picked_free_and_printed(suite):
    """Issue 21, defect 18: metrics always bound at port + 1000, so neighbouring
    suites collided and crash-looped."""
    deadline = time.monotonic() + 10
    while len(urls := _metrics_urls(suite)) < len(EXPECTED_SERVICES):
        assert time.monotonic() < deadline, suite.reports
        time.sleep(0.1)
    for name, url in urls.items():
        assert not url.endswith(f":{suite.ports[name] + 1000}/metrics")
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200
            assert b"lattice_rpc" in answer.read()


def _metrics_urls(suite: Suite) -> dict[str, str]:
    urls = {}
    for line in list(suite.reports):
        match = re.match(r"\s+(\w+)\s+\S+\s+metrics (http://\S+/metrics)", line)
        if match:
            urls[match.group(1)] = match.group(2)
    return urls


def test_redis_is_supervised_like_the_services(suite):
    """Issue 21, defect 16: a Redis that died stayed dead."""
    (server,) = [p for p in suite.children() if "redis-server" in " ".join(p.cmdline())]
    server.kill()
    deadline = time.monotonic() + 30
    while not any(line.startswith("lattice: redis is healthy again") for line in suite.reports):
        assert time.monotonic() < deadline, suite.reports
        time.sleep(0.2)
    assert any(line.startswith("lattice: redis exited") for line in suite.reports)
    client = redis.Redis(host="127.0.0.1", port=suite.redis_port, socket_timeout=5)
    assert client.ping()
    client.close()


def test_sigterm_stops_everything_and_leaves_no_orphans(suite):
    # The test before kills the registry: let the supervisor finish that restart first.
    deadline = time.monotonic() + 20
    while len(running := _running_services(suite)) < len(EXPECTED_SERVICES):
        assert time.monotonic() < deadline, f"only {sorted(running)} running: {suite.reports}"
        time.sleep(0.2)
    exits = [line for line in suite.reports if " exited with code " in line]
    restarted = ("lattice: registry ", "lattice: redis ")  # the tests before killed them
    assert all(line.startswith(restarted) for line in exits), suite.reports
    children = suite.children()
    suite.process.send_signal(signal.SIGTERM)
    assert suite.process.wait(timeout=30) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"


def test_sigterm_during_start_up_stops_the_suite(tmp_path):
    """Issue 21, defect 19: SIGTERM during start-up was ignored until start-up ended."""
    argv = [sys.executable, "-m", "lattice.cli", "up", "--data-dir", str(tmp_path)]
    argv += ["--redis-port", str(free_port()), "--grace", "2"]
    for name in EXPECTED_SERVICES:
        argv += [f"--{name}-port", str(free_port())]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "LATTICE_LOG_LEVEL": "WARNING"},
    )
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 30
    while not any("services." in " ".join(c.cmdline()) for c in _children(parent)):
        assert time.monotonic() < deadline and process.poll() is None, "no service started"
        time.sleep(0.05)
    children = _children(parent)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Lattice is up" not in output
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"


def _children(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
