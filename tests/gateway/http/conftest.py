"""A real suite (registry, inference, trainer, gateway with its HTTP front) per package."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
    from tests.sdk.real_stack import running_stack

    model_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("model"), n_positions=512)
    encoder_dir = build_tiny_encoder(tmp_path_factory.mktemp("encoder"))
    yield from running_stack(tmp_path_factory.mktemp("stack"), model_dir, encoder_dir, http=True)


@pytest.fixture(scope="package")
def http_url(stack) -> str:
    return stack.servers["gateway"].http.url


@pytest.fixture
def openai_client(stack, http_url):
    import openai

    with openai.OpenAI(base_url=f"{http_url}/v1", api_key=stack.token, max_retries=0) as client:
        yield client


def start_gateway(stack, tracer_provider=None, **overrides):
    """Another real gateway (with its HTTP front) over the stack's services."""
    from services.gateway.server import GatewaySettings, build_server
    from tests.sdk.real_stack import SECRET

    values = {
        "port": 0,
        "http_port": 0,
        "data_dir": stack.root,
        "log_json": False,
        "grace_seconds": 0.5,
        "registry_address": stack.address("registry"),
        "inference_addresses": (stack.address("inference"),),
        "trainer_address": stack.address("trainer"),
        "dev_jwt_secret": SECRET,
        **overrides,
    }

    async def start():
        server = await build_server(GatewaySettings(**values), tracer_provider=tracer_provider)
        await server.start()
        return server

    return stack.run(start())


@pytest.fixture(scope="package")
def strict_gateway(stack):
    """4 requests per tenant per window (no Redis: this replica's limiter) and one
    open stream per tenant."""
    server = start_gateway(
        stack, quota_requests=4, quota_window_seconds=600, max_streams_per_tenant=1
    )
    yield server
    stack.run(server.stop(0.5))
