"""The HTTP front's edges: one trace per request, no replica -> 503, TLS like gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time

import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.suite.echo import start_echo
from services.suite.ports import free_port
from tests.gateway.http.conftest import start_gateway
from tests.sdk.real_stack import MODEL
from tests.support.certs import make_tls_files

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_an_http_request_is_one_trace_down_to_the_upstream_call(stack):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = start_gateway(stack, tracer_provider=provider)
    try:
        reply = httpx.post(
            f"{gateway.http.url}/v1/completions",
            json={"model": MODEL, "prompt": "traced", "max_tokens": 2},
            headers={
                "authorization": f"Bearer {stack.token}",
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            },
        )
        assert reply.status_code == 200, reply.text
    finally:
        stack.run(gateway.stop(0.5))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["POST /v1/completions"]
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    for stage in ("gateway.authn", "gateway.authz", "gateway.route", "upstream Generate"):
        assert spans[stage].context.trace_id == server.context.trace_id, stage
    assert spans["gateway.authn"].parent.span_id == server.context.span_id


def test_no_healthy_replica_is_503_with_retry_after(stack):
    gateway = start_gateway(
        stack, inference_addresses=(f"127.0.0.1:{free_port()}",), upstream_max_attempts=1
    )
    try:
        client = openai.OpenAI(
            base_url=f"{gateway.http.url}/v1", api_key=stack.token, max_retries=0
        )
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=1)
        assert caught.value.status_code == 503
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert "Traceback" not in caught.value.response.text
    finally:
        stack.run(gateway.stop(0.5))


def test_http_port_speaks_tls_with_the_grpc_port_settings(stack, tmp_path):
    files = make_tls_files(tmp_path)
    gateway = start_gateway(
        stack, tls_cert_file=str(files.server_cert), tls_key_file=str(files.server_key)
    )
    try:
        url = gateway.http.url
        assert url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(files.ca))
        assert httpx.get(f"{url}/healthz", verify=trusted).status_code == 200
        with pytest.raises(httpx.ConnectError):  # our CA is not in the system store
            httpx.get(f"{url}/healthz")
        with pytest.raises(httpx.HTTPError):  # and plaintext is not served at all
            httpx.get(url.replace("https://", "http://") + "/healthz")
    finally:
        stack.run(gateway.stop(0.5))


def test_each_http_request_gets_an_access_log_line(stack, http_url, caplog):
    caplog.set_level(logging.INFO, logger="lattice.rpc")
    headers = {"authorization": f"Bearer {stack.token}", "x-request-id": "req-logged-1"}
    assert httpx.get(f"{http_url}/v1/models", headers=headers).status_code == 200
    assert httpx.get(f"{http_url}/v1/models/no-such-model", headers=headers).status_code == 404
    expected = {
        ("GET /v1/models", "200", logging.INFO),
        ("GET /v1/models/no-such-model", "404", logging.WARNING),
    }
    deadline = time.monotonic() + 5  # the line is written just after the response is sent
    while True:
        lines = {
            (r.rpc_method, r.rpc_code, r.levelno)
            for r in caplog.records
            if getattr(r, "rpc_method", "").startswith("GET /v1/models")
        }
        if expected <= lines or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert expected <= lines


def test_an_idle_stream_is_ended_with_an_error_event_and_cancelled_upstream(stack):
    """A token every 0.5 s (the tests' real EchoInference server) against a 0.2 s
    idle limit: one chunk, then an error event, no [DONE], upstream cancelled."""
    echo_server, echo = stack.run(start_echo("slow", stream_delay=0.5))
    gateway = start_gateway(
        stack, inference_addresses=(echo_server.address,), http_sse_idle_seconds=0.2
    )
    try:
        reply = httpx.post(
            f"{gateway.http.url}/v1/completions",
            json={"model": MODEL, "prompt": "slow", "max_tokens": 5, "stream": True},
            headers={"authorization": f"Bearer {stack.token}"},
            timeout=30,
        )
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
        assert reply.status_code == 200 and len(events) == 2, events
        assert json.loads(events[0])["choices"][0]["text"] == "t0 "
        assert "no token for 0.2s" in json.loads(events[1])["error"]["message"]
        stack.run(asyncio.wait_for(echo.stream_cancelled.wait(), 5))
    finally:
        stack.run(gateway.stop(0.5))
        stack.run(echo_server.stop(0))
