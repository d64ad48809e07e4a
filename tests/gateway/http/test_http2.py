"""HTTP/2 on the HTTP front (hypercorn): h2 over TLS by ALPN, h2c by prior
knowledge in cleartext, with real h2 clients (httpx2 + h2, curl's nghttp2)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest

from services.gateway.http.servers import TlsFiles, choose
from tests.gateway.http.conftest import start_gateway
from tests.sdk.real_stack import MODEL
from tests.support.certs import make_tls_files

REQUEST = {"model": MODEL, "prompt": "Return the", "max_tokens": 6, "temperature": 0}


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def trusted(tls) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca))


@pytest.fixture(scope="module")
def h2_gateway(stack, tls):
    """TLS with the default server choice (`auto`): hypercorn, h2 by ALPN."""
    gateway = start_gateway(
        stack, tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key)
    )
    yield gateway
    stack.run(gateway.stop(0.5))


@pytest.fixture(scope="module")
def h2c_gateway(stack):
    gateway = start_gateway(stack, http_server="hypercorn")
    yield gateway
    stack.run(gateway.stop(0.5))


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60)


def test_auto_is_hypercorn_with_tls_and_uvicorn_without():
    assert choose("auto", TlsFiles("cert.pem", "key.pem")) == "hypercorn"
    assert choose("auto", TlsFiles()) == "uvicorn"
    assert choose("hypercorn", TlsFiles()) == "hypercorn"
    with pytest.raises(ValueError, match="http_server must be one of"):
        choose("h2o", TlsFiles())


def test_the_default_cleartext_port_is_http1_only(stack):
    assert not stack.servers["gateway"].http.http2


def test_tls_port_negotiates_h2_and_still_serves_http1(stack, h2_gateway, trusted):
    url = h2_gateway.http.url
    assert url.startswith("https://") and h2_gateway.http.http2
    with httpx.Client(http2=True, verify=trusted) as client:
        reply = client.get(f"{url}/healthz")
    assert reply.status_code == 200 and reply.http_version == "HTTP/2"
    with httpx.Client(verify=trusted) as client:  # ALPN offers only http/1.1
        reply = client.get(f"{url}/healthz")
    assert reply.status_code == 200 and reply.http_version == "HTTP/1.1"


def test_openai_sdk_over_h2_streams_the_same_text(stack, h2_gateway, trusted):
    with (
        httpx.Client(http2=True, verify=trusted) as transport,
        openai.OpenAI(
            base_url=f"{h2_gateway.http.url}/v1",
            api_key=stack.token,
            http_client=transport,
            max_retries=0,
        ) as client,
    ):
        raw = client.completions.with_raw_response.create(**REQUEST)
        assert raw.http_response.http_version == "HTTP/2"
        assert raw.headers["x-lattice-model"] == f"{MODEL}:1"
        whole = raw.parse()
        streamed = "".join(
            choice.text
            for chunk in client.completions.create(**REQUEST, stream=True)
            for choice in chunk.choices
        )
        assert streamed == whole.choices[0].text
        with pytest.raises(openai.NotFoundError):
            client.completions.create(**{**REQUEST, "model": "no-such-model"})


def test_curl_http2_over_tls_streams_data_lines_and_done(stack, h2_gateway, tls):
    done = _curl(
        "-N",
        "--http2",
        "--cacert",
        str(tls.ca),
        "-w",
        "\nhttp_version=%{http_version}",
        f"{h2_gateway.http.url}/v1/completions",
        "-H",
        f"Authorization: Bearer {stack.token}",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({**REQUEST, "stream": True}),
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line]
    assert lines[-1] == "http_version=2"
    assert lines[-2] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines[:-1])


def test_curl_h2c_prior_knowledge_in_cleartext(stack, h2c_gateway):
    url = h2c_gateway.http.url
    assert url.startswith("http://") and h2c_gateway.http.http2
    done = _curl(
        "--http2-prior-knowledge",
        "-w",
        "\nhttp_version=%{http_version}",
        f"{url}/v1/models",
        "-H",
        f"Authorization: Bearer {stack.token}",
    )
    assert done.returncode == 0, done.stderr
    body, version = done.stdout.rsplit("\n", 1)
    assert version == "http_version=2"
    assert MODEL in {model["id"] for model in json.loads(body)["data"]}
    refused = _curl(
        "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/v1/models"
    )
    assert refused.stdout == "401"


def _h2_client(url: str, ca: str) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    """A bare h2 client (the `h2` protocol library over a TLS socket): httpx's h2
    transport never resets a stream it abandons, curl and browsers do."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
    assert sock.selected_alpn_protocol() == "h2"
    sock.settimeout(30)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    sock.sendall(connection.data_to_send())
    return sock, connection


def _h2_request(sock, connection, stream_id, method, path, authority, headers, body=b""):
    connection.send_headers(
        stream_id,
        [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", authority),
            *headers,
            ("content-length", str(len(body))),
        ],
        end_stream=not body,
    )
    if body:
        connection.send_data(stream_id, body, end_stream=True)
    sock.sendall(connection.data_to_send())


def _h2_events(sock, connection):
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            yield event
        sock.sendall(connection.data_to_send())


def test_one_h2_connection_carries_more_than_a_thousand_requests(stack, h2c_gateway):
    """No per-connection request cap: hypercorn's default (1000) ends the
    connection with GOAWAY, and httpx then fails the requests in flight."""
    headers = {"authorization": f"Bearer {stack.token}"}
    body = {**REQUEST, "max_tokens": 2}  # greedy: answered from the response cache

    async def many() -> set[int]:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=h2c_gateway.http.url, http1=False, http2=True, limits=limits, timeout=60
        ) as client:
            statuses: set[int] = set()
            remaining = iter(range(1100))

            async def worker() -> None:
                for _ in remaining:
                    reply = await client.post("/v1/completions", json=body, headers=headers)
                    statuses.add(reply.status_code)

            await asyncio.gather(*(worker() for _ in range(32)))
            return statuses

    assert asyncio.run(many()) == {200}


def test_a_reset_h2_stream_stops_generation_upstream(stack, h2_gateway, tls):
    """Leaving an h2 stream resets it (RST_STREAM CANCEL) and keeps the connection:
    the server notices and cancels the upstream call, and the connection serves on."""
    manager = stack.servers["inference"].services[0].servicer.manager
    backend = next(e for e in manager.versions() if (e.name, e.version) == (MODEL, 1)).backend
    url = h2_gateway.http.url
    authority = url.removeprefix("https://")
    body = json.dumps({**REQUEST, "max_tokens": 400, "stream": True}).encode()
    headers = [("authorization", f"Bearer {stack.token}"), ("content-type", "application/json")]
    sock, connection = _h2_client(url, str(tls.ca))
    with sock:
        _h2_request(sock, connection, 1, "POST", "/v1/completions", authority, headers, body)
        received = 0
        for event in _h2_events(sock, connection):
            if isinstance(event, h2.events.ResponseReceived):
                assert dict(event.headers)[b":status"] == b"200"
            if isinstance(event, h2.events.DataReceived):
                received += event.data.count(b"data: ")
                if received >= 3:
                    break
        assert backend.active_generations == 1  # still generating when we leave
        produced_at_reset = backend.tokens_generated
        connection.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        sock.sendall(connection.data_to_send())
        reset_at = time.perf_counter()
        deadline = time.monotonic() + 5
        while backend.active_generations and time.monotonic() < deadline:
            time.sleep(0.002)
        stopped_after = time.perf_counter() - reset_at
        extra = backend.tokens_generated - produced_at_reset
        print(f"stopped {stopped_after * 1000:.1f} ms after RST_STREAM, {extra} more tokens")
        assert backend.active_generations == 0
        assert extra <= 10
        # Same connection, next stream.
        _h2_request(sock, connection, 3, "GET", "/healthz", authority, [])
        for event in _h2_events(sock, connection):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 3:
                assert dict(event.headers)[b":status"] == b"200"
                break


def test_mutual_tls_over_h2(stack, tls, trusted):
    gateway = start_gateway(
        stack,
        tls_cert_file=str(tls.server_cert),
        tls_key_file=str(tls.server_key),
        tls_client_ca_file=str(tls.ca),
    )
    try:
        url = f"{gateway.http.url}/healthz"
        with pytest.raises(httpx.HTTPError), httpx.Client(http2=True, verify=trusted) as client:
            client.get(url)
        with_cert = ssl.create_default_context(cafile=str(tls.ca))
        with_cert.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        with httpx.Client(http2=True, verify=with_cert) as client:
            reply = client.get(url)
        assert reply.status_code == 200 and reply.http_version == "HTTP/2"
    finally:
        stack.run(gateway.stop(0.5))
