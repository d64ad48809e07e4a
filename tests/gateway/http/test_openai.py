"""The official `openai` package against the gateway's HTTP front on a real suite."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from lattice.tokens import mint_dev_token
from tests.sdk.real_stack import ENCODER, MODEL, SECRET


def test_models_list_shows_online_models(openai_client):
    ids = {model.id for model in openai_client.models.list()}
    assert {MODEL, ENCODER} <= ids


def test_model_by_name_version_and_alias_forms(openai_client):
    assert openai_client.models.retrieve(MODEL).id == MODEL
    assert openai_client.models.retrieve(f"{MODEL}:1").id == f"{MODEL}:1"
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


def test_completion_streamed_text_equals_unstreamed_at_temperature_zero(openai_client):
    kwargs = {"model": MODEL, "prompt": "Return the", "max_tokens": 12, "temperature": 0}
    whole = openai_client.completions.create(**kwargs)
    assert whole.model == f"{MODEL}:1"
    assert whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    pieces, finish = [], None
    for chunk in openai_client.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].text
    assert finish == whole.choices[0].finish_reason


def test_completion_with_prompt_list_and_n(openai_client):
    result = openai_client.completions.create(
        model=MODEL, prompt=["one", "two"], n=2, max_tokens=3, temperature=0.8, seed=7
    )
    assert [c.index for c in result.choices] == [0, 1, 2, 3]


def test_response_carries_request_id_and_version(openai_client):
    raw = openai_client.completions.with_raw_response.create(
        model=MODEL, prompt="hi", max_tokens=2, extra_headers={"x-request-id": "req-http-1"}
    )
    assert raw.headers["x-request-id"] == "req-http-1"
    assert raw.headers["x-lattice-model"] == f"{MODEL}:1"


def test_chat_stream_with_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Return the"},
        ],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = openai_client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Return the"},
        ],
        max_tokens=8,
        temperature=0,
    )
    assert whole.choices[0].message.content == text


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings(openai_client, encoding):
    result = openai_client.embeddings.create(
        model=ENCODER, input=["first text", "second text"], encoding_format=encoding
    )
    assert [d.index for d in result.data] == [0, 1]
    vector = result.data[0].embedding
    if encoding == "base64":  # asked for explicitly, the SDK hands the string back
        raw = base64.b64decode(vector)
        vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(vector) > 1
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-3
    assert result.usage.prompt_tokens > 0


def test_bad_token_is_authentication_error(http_url):
    client = openai.OpenAI(base_url=f"{http_url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.body["type"] == "authentication_error"


def test_missing_scope_is_permission_denied(http_url):
    token = mint_dev_token(SECRET, tenant="acme", scopes=["registry:read"])
    client = openai.OpenAI(base_url=f"{http_url}/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert "inference:invoke" in caught.value.message


def test_unknown_model_is_not_found(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)


def test_bad_parameter_names_it(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL, prompt="hi", temperature=5)
    assert caught.value.body["param"] == "temperature"


def test_a_limit_inference_enforces_is_named_as_the_openai_parameter(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL, prompt="hi", max_tokens=10**6)
    assert caught.value.body["param"] == "max_tokens"
    assert caught.value.body["message"].startswith("max_tokens: ")
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model=ENCODER, input=["fine", ""])
    assert caught.value.body["param"] == "input[1]"


def test_unknown_field_is_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(
            model=MODEL, prompt="hi", max_tokens=2, extra_body={"frobnicate": 1}
        )
    assert caught.value.body["param"] == "frobnicate"


def test_over_quota_is_rate_limit_with_retry_after(stack):
    url = stack.servers["limited"].http.url
    token = mint_dev_token(SECRET, tenant="rate-limited", scopes=["inference:invoke"])
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
    client.completions.create(model=MODEL, prompt="hi", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=1)
    assert int(caught.value.response.headers["retry-after"]) >= 1
