"""SSE from the HTTP front: curl sees data lines and [DONE]; a client that
leaves stops generation upstream; streams per tenant are bounded."""

from __future__ import annotations

import json
import subprocess
import time

import httpx2 as httpx  # what the openai SDK itself uses
import pytest

from lattice.tokens import mint_dev_token
from lattice.v1 import common_pb2, inference_pb2
from services.gateway.http.openai_api import _Chunks
from services.gateway.http.sse import event
from tests.sdk.real_stack import MODEL, SECRET


def _backend(stack):
    manager = stack.servers["inference"].services[0].servicer.manager
    return next(e for e in manager.versions() if (e.name, e.version) == (MODEL, 1)).backend


def test_curl_streaming_shows_data_lines_and_done(stack, http_url):
    body = json.dumps({"model": MODEL, "prompt": "Return the", "max_tokens": 5, "stream": True})
    done = subprocess.run(
        [
            "curl",
            "-sN",
            f"{http_url}/v1/completions",
            "-H",
            f"Authorization: Bearer {stack.token}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    events = [line for line in done.stdout.splitlines() if line]
    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert chunks[0]["object"] == "text_completion" and chunks[0]["model"] == f"{MODEL}:1"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_client_disconnect_stops_generation_within_a_few_decode_steps(stack, http_url):
    backend = _backend(stack)
    # Greedy: deterministic (no response cache in this stack), so the model is known
    # not to stop on its own for hundreds of tokens.
    request = {"model": MODEL, "prompt": "Return the", "max_tokens": 400, "temperature": 0}
    headers = {"authorization": f"Bearer {stack.token}"}
    before = backend.tokens_generated  # the count is the backend's, over all tests
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{http_url}/v1/completions", json={**request, "stream": True}, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received == 3:
                break
        assert backend.active_generations == 1  # still generating when we leave
        produced_at_close = backend.tokens_generated
        closed_at = time.perf_counter()
    # the connection is closed here; generation upstream must stop
    deadline = time.monotonic() + 5
    while backend.active_generations and time.monotonic() < deadline:
        time.sleep(0.002)
    stopped_after = time.perf_counter() - closed_at
    extra_tokens = backend.tokens_generated - produced_at_close
    print(f"stopped {stopped_after * 1000:.1f} ms after the disconnect, {extra_tokens} more tokens")
    assert backend.active_generations == 0
    assert extra_tokens <= 10
    assert backend.tokens_generated - before < 400


def test_streams_per_tenant_are_bounded(strict_gateway):
    url = strict_gateway.http.url
    token = mint_dev_token(SECRET, tenant="one-stream", scopes=["inference:invoke"])
    headers = {"authorization": f"Bearer {token}"}
    request = {"model": MODEL, "prompt": "One stream", "max_tokens": 300, "temperature": 0}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{url}/v1/completions", json={**request, "stream": True}, headers=headers
        ) as first,
    ):
        assert first.status_code == 200
        second = client.post(
            f"{url}/v1/completions", json={**request, "stream": True}, headers=headers
        )
        assert second.status_code == 429
        assert "streams open" in second.json()["error"]["message"]
        assert second.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("content_type", "body", "param", "words"),
    [
        ("application/json", b"{not json", "body", "malformed JSON"),
        ("text/plain", b"{}", "content-type", "application/json"),
        ("application/json", b"[1]", "body", "JSON object"),
        ("application/json", b'{"model": "tiny-gpt"}', "prompt", "required"),
    ],
)
def test_bad_bodies_get_400_naming_the_problem(stack, http_url, content_type, body, param, words):
    response = httpx.post(
        f"{http_url}/v1/completions",
        content=body,
        headers={"authorization": f"Bearer {stack.token}", "content-type": content_type},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413(stack, http_url):
    limit = 4 * 1024 * 1024
    response = httpx.post(
        f"{http_url}/v1/completions",
        content=b"x" * (limit + 1),
        headers={"authorization": f"Bearer {stack.token}", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_unknown_route_answers_in_the_error_shape(http_url):
    response = httpx.get(f"{http_url}/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("chat", [False, True])
def test_a_token_event_is_the_same_bytes_as_the_chunk_it_stands_for(chat):
    """Token events are written from a template (no dict per token): byte for
    byte what encoding the chunk would give, for any text a token can carry."""
    texts = ["Hello", " 世界", "🙂", 'a "quote"', "back\\slash", "line\nbreak", "\x00\x1f", "é"]
    messages = [inference_pb2.GenerateStreamResponse(delta=t, index=i) for i, t in enumerate(texts)]
    messages.append(
        inference_pb2.GenerateStreamResponse(
            index=len(texts),
            finish_reason=inference_pb2.FINISH_REASON_LENGTH,
            usage=common_pb2.Usage(completion_tokens=len(texts)),
        )
    )
    fast, reference = _Chunks(chat, "m:1"), _Chunks(chat, "m:1")
    reference.base = dict(fast.base)
    for message in messages:
        expected = reference.of(message)
        got = fast.encode(message)
        assert got == (None if expected is None else event(expected)), message
        if got is not None:
            json.loads(got.removeprefix(b"data: "))
    assert (
        fast.usage
        == reference.usage
        == {"prompt_tokens": 0, "completion_tokens": 8, "total_tokens": 0}
    )
