"""TLS: mutual TLS from the gateway to inference replicas; server TLS never silently off."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.errors import Unavailable
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.gateway.server import build_server
from services.gateway.upstreams import ReplicaPool
from services.runtime.tls import channel_credentials
from services.suite.echo import EchoInference
from tests.support.certs import make_tls_files


@pytest.fixture
async def mtls_replica(tmp_path):
    """A real InferenceService that only accepts clients with a certificate from our CA."""
    files = make_tls_files(tmp_path)
    server = aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(EchoInference("tls"), server)
    credentials = grpc.ssl_server_credentials(
        [(files.server_key.read_bytes(), files.server_cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield files, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_pool_speaks_mtls_to_replicas(mtls_replica):
    files, address = mtls_replica
    request = inference_pb2.GenerateRequest(model="chat:1", prompt="secure")
    pool = ReplicaPool(
        [address],
        inference_pb2_grpc.InferenceServiceStub,
        credentials=channel_credentials(
            str(files.ca), str(files.client_cert), str(files.client_key)
        ),
    )
    try:
        assert (await pool.unary("Generate", request, [])).text == "tls:secure"
    finally:
        await pool.close()
    # Without a client certificate the replica refuses the handshake.
    anonymous = ReplicaPool(
        [address],
        inference_pb2_grpc.InferenceServiceStub,
        credentials=channel_credentials(str(files.ca)),
    )
    try:
        with pytest.raises(Unavailable):
            await anonymous.unary("Generate", request, [])
    finally:
        await anonymous.close()


async def test_half_configured_tls_is_an_error(stack, tmp_path):
    files = make_tls_files(tmp_path)
    with pytest.raises(ValueError, match="tls_key_file"):
        await build_server(
            stack.settings(
                inference_addresses=("127.0.0.1:1",), tls_cert_file=str(files.server_cert)
            )
        )
    with pytest.raises(ValueError, match="upstream_key_file"):
        await build_server(
            stack.settings(
                upstream_ca_file=str(files.ca), upstream_cert_file=str(files.client_cert)
            )
        )


async def test_server_tls_serves_tls_and_never_plaintext(stack, tmp_path):
    """With a certificate configured the gateway speaks TLS only; plaintext never works."""
    files = make_tls_files(tmp_path)
    settings = stack.settings(
        inference_addresses=("127.0.0.1:1",),
        tls_cert_file=str(files.server_cert),
        tls_key_file=str(files.server_key),
    )
    server = await build_server(settings)
    await server.start()
    stack.gateways.append(server)
    credentials = grpc.ssl_channel_credentials(files.ca.read_bytes())
    async with aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with aio.insecure_channel(server.address) as channel:
            await inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                inference_pb2.GenerateRequest(model="x", prompt="y"), timeout=2
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
