"""`lattice up --tls`: a development CA in the data dir, mutual TLS between the
services, TLS on the gateway; the SDK and CLI trust the dev CA from the data dir.
Four real service processes, real clients (the SDK, the CLI, grpcurl)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import lattice
from lattice.tokens import ALL_SCOPES, DEV_SECRET_FILE, mint_dev_token
from services.suite.ports import free_port

pytestmark = pytest.mark.slow

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
NAMES = ("gateway", "registry", "inference", "trainer")


class TlsSuite:
    def __init__(self, process: subprocess.Popen[str], ports: dict[str, int], data_dir: Path):
        self.process = process
        self.ports = ports
        self.data_dir = data_dir

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Iterator[TlsSuite]:
    ports = {name: free_port() for name in NAMES}
    data_dir = tmp_path_factory.mktemp("lattice-up-tls")
    argv = [sys.executable, "-m", "lattice.cli", "up", "--tls", "--data-dir", str(data_dir)]
    argv += ["--redis-url", "none", "--grace", "3"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "LATTICE_LOG_LEVEL": "WARNING"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Lattice is up"):
            break
    else:
        pytest.fail(f"lattice up --tls exited with {process.wait()} before becoming ready")
    yield TlsSuite(process, ports, data_dir)
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_the_sdk_reaches_the_gateway_over_tls_trusting_the_dev_ca(suite, monkeypatch):
    assert (suite.data_dir / "tls" / "ca.pem").is_file()
    secret = (suite.data_dir / DEV_SECRET_FILE).read_text().strip()
    token = mint_dev_token(secret, tenant="acme", scopes=ALL_SCOPES)
    monkeypatch.setenv("LATTICE_DATA_DIR", str(suite.data_dir))
    with lattice.Client(suite.address("gateway"), token, tls=True) as client:
        assert client.list_models() == []  # through gateway -> registry, both on TLS
    # The CLI finds the CA the same way.
    env = {
        **os.environ,
        "LATTICE_DATA_DIR": str(suite.data_dir),
        "LATTICE_TLS": "1",
        "LATTICE_TARGET": suite.address("gateway"),
        "LATTICE_TOKEN": token,
    }
    command = [sys.executable, "-m", "lattice.cli", "models", "list"]
    listed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    # Plaintext to the gateway is refused.
    assert _health(suite.address("gateway"), None) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", ["registry", "inference", "trainer"])
def test_internal_services_accept_only_suite_certificates(suite, name, tmp_path):
    ca = (suite.data_dir / "tls" / "ca.pem").read_bytes()
    supervisor = suite.data_dir / "tls" / "supervisor"
    member = grpc.ssl_channel_credentials(
        ca,
        Path(f"{supervisor}-key.pem").read_bytes(),
        Path(f"{supervisor}.pem").read_bytes(),
    )
    assert _health(suite.address(name), member) == grpc.StatusCode.OK
    assert _health(suite.address(name), grpc.ssl_channel_credentials(ca)) != grpc.StatusCode.OK
    assert _health(suite.address(name), None) != grpc.StatusCode.OK
    # grpcurl with no client certificate cannot even list. (It retries the refused
    # handshake until its connect timeout, 10 s by default: 2 s is plenty here.)
    ca_file = str(suite.data_dir / "tls" / "ca.pem")
    command = [GRPCURL, "-connect-timeout", "2", "-cacert", ca_file, suite.address(name)]
    done = subprocess.run([*command, "list"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "Failed to dial" in done.stderr, done.stderr  # refused at the handshake
