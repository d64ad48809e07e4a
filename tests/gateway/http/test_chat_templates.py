"""`/v1/chat/completions` renders messages with the served model's own chat
template (in inference, where the tokenizer is), on a real suite."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest
from transformers import AutoTokenizer

from services.suite.tiny_models import build_tiny_causal_lm
from tests.sdk.real_stack import MODEL

CHAT_MODEL = "templated-gpt"
STRICT_MODEL = "strict-gpt"
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
MESSAGES = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Count the stars."},
]
#: TEMPLATE's rendering of MESSAGES ("developer" is given to templates as "system").
RENDERED = "<|system|>Be brief.\n<|user|>Count the stars.\n<|assistant|>"
#: The default template's rendering, for a model without one.
DEFAULT_RENDERED = "System: Be brief.\nUser: Count the stars.\nAssistant:"


@pytest.fixture(scope="module")
def templated(stack, tmp_path_factory):
    """Two more versions of the tiny LM, one with a template file in its directory
    and one whose template refuses every conversation."""
    chat_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("templated"), n_positions=512)
    (chat_dir / "chat_template.jinja").write_text(TEMPLATE)
    stack.deploy_tiny_model(chat_dir, CHAT_MODEL)
    strict_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("strict"), n_positions=512)
    (strict_dir / "chat_template.jinja").write_text(
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    )
    stack.deploy_tiny_model(strict_dir, STRICT_MODEL)
    return AutoTokenizer.from_pretrained(chat_dir)


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def test_chat_uses_the_models_template(openai_client, templated):
    chat = openai_client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert chat.usage.prompt_tokens == _tokens(templated, RENDERED)
    assert chat.usage.prompt_tokens != _tokens(templated, DEFAULT_RENDERED)
    # The model saw exactly the template's text: greedy decoding of that text as
    # a plain completion gives the same answer.
    plain = openai_client.completions.create(
        model=CHAT_MODEL, prompt=RENDERED, max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.completion_tokens == plain.usage.completion_tokens


def test_streamed_chat_uses_the_template_too(openai_client, templated):
    stream = openai_client.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == _tokens(templated, RENDERED)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = openai_client.completions.create(
        model=CHAT_MODEL, prompt=RENDERED, max_tokens=8, temperature=0
    )
    assert text == plain.choices[0].text


def test_a_model_without_a_template_gets_the_default(openai_client, templated):
    chat = openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0
    )
    assert chat.usage.prompt_tokens == _tokens(templated, DEFAULT_RENDERED)


def test_a_template_that_raises_is_a_400_naming_its_reason(openai_client, templated):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=STRICT_MODEL, messages=MESSAGES, max_tokens=4)
    assert caught.value.status_code == 400
    error = caught.value.body
    assert "Conversation roles must alternate user/assistant" in error["message"]
    assert error["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="must alternate"):
        openai_client.chat.completions.create(
            model=STRICT_MODEL, messages=MESSAGES, max_tokens=4, stream=True
        )
    # Still serving.
    assert openai_client.completions.create(model=STRICT_MODEL, prompt="hi", max_tokens=2).choices


def test_grpc_contract_takes_messages_over_rest(stack, http_url, templated):
    """The same rendering for any client of Generate (here REST, transcoded)."""
    headers = {"authorization": f"Bearer {stack.token}"}
    response = httpx.post(
        f"{http_url}/api/v1/models/{CHAT_MODEL}:generate",
        json={"messages": MESSAGES, "parameters": {"maxNewTokens": 4}},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["promptTokens"] == _tokens(templated, RENDERED)
    both = httpx.post(
        f"{http_url}/api/v1/models/{CHAT_MODEL}:generate",
        json={"prompt": "hi", "messages": MESSAGES},
        headers=headers,
        timeout=30,
    )
    assert both.status_code == 400
    assert "prompt or messages" in both.json()["error"]["message"]
