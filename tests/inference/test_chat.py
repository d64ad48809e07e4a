"""Conversations rendered with a real tokenizer's chat template (no gRPC)."""

from __future__ import annotations

import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from lattice.errors import FailedPrecondition, InvalidArgument
from services.inference.chat import ChatRenderer, ChatTurn, render_default
from services.inference.requests import GenerateCall, Limits, validate_generate
from services.suite.tiny_models import EOS_TOKEN, build_tiny_causal_lm

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    "{% if m.name is defined %} ({{ m.name }}){% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TURNS = (
    ChatTurn("developer", "Be brief."),
    ChatTurn("user", "Count the stars.", name="robot"),
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("chat-lm"))


def _tokenizer(model_dir, template: str | None):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = template
    return tokenizer


def test_the_models_template_renders_the_conversation(model_dir):
    renderer = ChatRenderer(_tokenizer(model_dir, TEMPLATE), "chat-lm")
    assert renderer.has_template
    assert renderer.render(TURNS) == (
        "<|system|>Be brief.\n<|user|>Count the stars. (robot)\n<|assistant|>"
    )


def test_a_template_file_in_the_model_directory_is_used(model_dir, tmp_path):
    directory = build_tiny_causal_lm(tmp_path / "lm")
    (directory / "chat_template.jinja").write_text(TEMPLATE)
    renderer = ChatRenderer(AutoTokenizer.from_pretrained(directory), "chat-lm")
    assert renderer.render(TURNS[1:]).startswith("<|user|>Count the stars.")


def test_without_a_template_the_default_transcript(model_dir):
    renderer = ChatRenderer(_tokenizer(model_dir, None), "plain")
    assert not renderer.has_template
    assert renderer.render(TURNS) == "System: Be brief.\nUser: Count the stars.\nAssistant:"
    assert ChatRenderer(None, "remote").render(TURNS) == render_default(TURNS)


def test_a_template_that_raises_is_invalid_argument_with_its_message(model_dir):
    template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    renderer = ChatRenderer(_tokenizer(model_dir, template), "strict")
    with pytest.raises(InvalidArgument) as caught:
        renderer.render(TURNS)
    assert caught.value.field == "messages"
    assert "Conversation roles must alternate user/assistant" in str(caught.value)
    assert "'strict'" in str(caught.value)


def test_a_template_error_of_any_kind_is_the_messages_fault(model_dir):
    renderer = ChatRenderer(_tokenizer(model_dir, "{{ messages[5].content }}"), "picky")
    with pytest.raises(InvalidArgument, match="refused them"):
        renderer.render(TURNS)


def test_a_template_that_does_not_compile_is_a_failed_precondition(model_dir):
    renderer = ChatRenderer(_tokenizer(model_dir, "{% for %}"), "broken")
    with pytest.raises(FailedPrecondition, match="does not compile"):
        renderer.render(TURNS)


def test_a_bos_written_by_the_template_is_not_doubled(model_dir):
    tokenizer = _tokenizer(model_dir, "{{ bos_token }}" + TEMPLATE)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS_TOKEN} $A", special_tokens=[(EOS_TOKEN, eos_id)]
    )
    rendered = ChatRenderer(tokenizer, "bos").render(TURNS)
    assert rendered.startswith("<|system|>")
    ids = tokenizer(rendered, add_special_tokens=True)["input_ids"]
    assert ids[0] == eos_id and ids[1] != eos_id


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (GenerateCall("m", "hi", messages=(ChatTurn("user", "hi"),)), "prompt"),
        (GenerateCall("m", "", messages=(ChatTurn("tool", "x"),)), "messages[0].role"),
        (
            GenerateCall("m", "", messages=(ChatTurn("user", "x", name="n" * 65),)),
            "messages[0].name",
        ),
        (GenerateCall("m", "", messages=(ChatTurn("user", " "),)), "messages"),
        (GenerateCall("m", "", messages=(ChatTurn("user", "x" * 101),)), "messages"),
        (GenerateCall("m", ""), "prompt"),
    ],
)
def test_conversations_are_validated_naming_the_field(call, field):
    with pytest.raises(InvalidArgument) as caught:
        validate_generate(call, Limits(max_prompt_chars=100))
    assert caught.value.field == field


def test_a_valid_conversation_passes_validation():
    validate_generate(GenerateCall("m", "", messages=TURNS), Limits())
