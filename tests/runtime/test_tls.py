"""A LatticeServer given server credentials speaks TLS, and only TLS."""

from __future__ import annotations

import grpc
import pytest

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings
from tests.runtime.servicers import ProbeInference, inference_service
from tests.support.certs import make_tls_files


async def test_tls_server_answers_tls_clients_and_refuses_plaintext(tmp_path):
    files = make_tls_files(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(files.server_key.read_bytes(), files.server_cert.read_bytes())]
    )
    server = LatticeServer(
        [inference_service(ProbeInference())],
        ServerSettings(port=0),
        server_credentials=credentials,
    )
    await server.start()
    try:
        client_credentials = grpc.ssl_channel_credentials(files.ca.read_bytes())
        async with grpc.aio.secure_channel(
            server.address,
            client_credentials,
            options=[("grpc.ssl_target_name_override", "localhost")],
        ) as channel:
            reply = await inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                inference_pb2.GenerateRequest(prompt="over tls"), timeout=5
            )
        assert reply.text == "over tls"
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                    inference_pb2.GenerateRequest(prompt="plain"), timeout=2
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
