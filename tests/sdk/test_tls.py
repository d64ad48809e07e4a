"""TLS and mutual TLS: the client verifies the server and presents its certificate."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

import lattice
from lattice.v1 import inference_pb2_grpc
from tests.support.certs import make_tls_files
from tests.support.sdk_servers import WordInference


@pytest.fixture
async def mtls_server(tmp_path):
    """A real gRPC server that requires a client certificate signed by the test CA."""
    files = make_tls_files(tmp_path / "tls")
    server = aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(WordInference(), server)
    credentials = grpc.ssl_server_credentials(
        [(files.server_key.read_bytes(), files.server_cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield files, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_mutual_tls_with_paths(mtls_server):
    files, address = mtls_server
    async with lattice.AsyncClient(
        address,
        root_certificates=files.ca,
        certificate_chain=files.client_cert,
        private_key=files.client_key,
        retries=1,
    ) as client:
        assert (await client.generate("tiny", "hi", max_new_tokens=2)).text == "w0 w1"


async def test_tls_settings_from_the_environment(mtls_server, monkeypatch):
    files, address = mtls_server
    monkeypatch.setenv("LATTICE_TARGET", address)
    monkeypatch.setenv("LATTICE_TLS_ROOT_CERT", str(files.ca))
    monkeypatch.setenv("LATTICE_TLS_CLIENT_CERT", str(files.client_cert))
    monkeypatch.setenv("LATTICE_TLS_CLIENT_KEY", str(files.client_key))
    async with lattice.AsyncClient(retries=1) as client:
        assert (await client.generate("tiny", "hi", max_new_tokens=1)).text == "w0"


async def test_without_a_client_certificate_or_in_plaintext_the_call_fails(mtls_server):
    files, address = mtls_server
    async with lattice.AsyncClient(
        address, root_certificates=files.ca.read_bytes(), retries=1, timeout=5
    ) as client:
        with pytest.raises(lattice.Unavailable):
            await client.generate("tiny", "hi")
    async with lattice.AsyncClient(address, tls=False, retries=1, timeout=5) as client:
        with pytest.raises(lattice.Unavailable):
            await client.generate("tiny", "hi")


def test_a_certificate_without_its_key_is_refused(tmp_path):
    files = make_tls_files(tmp_path)
    with pytest.raises(ValueError, match="both the certificate and its key"):
        lattice.Client("127.0.0.1:1", certificate_chain=files.client_cert)
