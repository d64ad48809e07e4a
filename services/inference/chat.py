"""Conversations rendered into the prompt a model expects.

Rendering happens here, in inference, and not in the gateway: the template
belongs to the serving version's tokenizer (`tokenizer_config.json`'s
`chat_template`, or `chat_template.jinja` beside it), which only the service
that loaded the version has, and routing may pick a different version (with a
different template) for every request. transformers' `apply_chat_template`
runs the template in its sandboxed Jinja environment, as `transformers serve`
and vLLM do; a model that ships no template gets the documented default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateSyntaxError

from lattice.errors import FailedPrecondition, InvalidArgument

#: Roles a conversation may use; "developer" (OpenAI's newer name) is "system".
CHAT_ROLES = ("system", "developer", "user", "assistant")
_DEFAULT_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
#: Longest template error passed on to the client.
_MAX_REASON_CHARS = 300


@dataclasses.dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of a conversation, already validated."""

    role: str
    content: str
    name: str = ""

    @property
    def template_role(self) -> str:
        return "system" if self.role == "developer" else self.role


def render_default(turns: Sequence[ChatTurn]) -> str:
    """The default template, for models that ship none.

    One line per message, `<Role>: <content>`, then `Assistant:` for the model
    to continue: a plain transcript that any causal LM can complete.
    """
    lines = [f"{_DEFAULT_LABELS[t.template_role]}: {t.content}" for t in turns]
    lines.append("Assistant:")
    return "\n".join(lines)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether encoding a prompt puts the BOS token in front by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


class ChatRenderer:
    """One loaded version's way of turning a conversation into its prompt."""

    def __init__(self, tokenizer: Any | None, model: str) -> None:
        template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        self._tokenizer = tokenizer if template else None
        self._model = model
        # A template that writes the BOS text itself, before a tokenizer that adds
        # BOS again, would give the model two: the text's copy is dropped.
        self._bos_text = ""
        if self._tokenizer is not None and _adds_bos(self._tokenizer):
            self._bos_text = self._tokenizer.bos_token or ""

    @property
    def has_template(self) -> bool:
        return self._tokenizer is not None

    def render(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt for `turns`, ending where the assistant's reply starts."""
        if self._tokenizer is None:
            return render_default(turns)
        messages = []
        for turn in turns:
            message = {"role": turn.template_role, "content": turn.content}
            if turn.name:
                message["name"] = turn.name
            messages.append(message)
        try:
            text = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except TemplateSyntaxError as exc:
            raise FailedPrecondition(
                f"the chat template of model {self._model!r} does not compile "
                f"(line {exc.lineno}: {exc.message}); the version's tokenizer needs a fixed "
                "chat_template"
            ) from None
        except Exception as exc:  # the template is code: whatever it raises is its verdict
            reason = (str(exc) or type(exc).__name__)[:_MAX_REASON_CHARS]
            raise InvalidArgument(
                "messages", f"the chat template of model {self._model!r} refused them: {reason}"
            ) from None
        if not isinstance(text, str):
            raise FailedPrecondition(
                f"the chat template of model {self._model!r} did not render to text"
            )
        if self._bos_text and text.startswith(self._bos_text):
            text = text[len(self._bos_text) :]
        return text
