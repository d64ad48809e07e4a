"""Inference requests as plain values, and their validation.

The servicer converts protobuf messages into these; `validate_*` checks every
field and raises `InvalidArgument(field, why)` naming the field the way the
proto spells it, so a client knows exactly what to fix. Policy limits that
need the model (prompt length in tokens) are checked later, by the engine.
"""

from __future__ import annotations

import dataclasses
import math

from lattice.errors import InvalidArgument
from services.inference.backends import GenerationParams
from services.inference.chat import CHAT_ROLES, ChatTurn

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_ROUTING_KEY_CHARS = 256
MAX_CHAT_NAME_CHARS = 64
#: Below this a temperature is greedy decoding: dividing logits by a denormal such
#: as 1e-45 overflows them to inf, and sampling from that is undefined.
MIN_SAMPLING_TEMPERATURE = 1e-3


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Service-wide ceilings; the registry policy may lower them per model."""

    default_max_new_tokens: int = 64
    max_new_tokens: int = 4096
    max_prompt_chars: int = 200_000
    max_batch_size: int = 32


@dataclasses.dataclass(slots=True)  # not frozen: built per request, frozen costs ~1 us
class GenerateCall:
    """A Generate or GenerateStream request as the client sent it."""

    model: str
    prompt: str
    max_new_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    skip_cache: bool = False
    routing_key: str = ""
    #: The verified caller's tenant: cached answers are never shared across tenants,
    #: and the scheduler shares its queue fairly between tenants.
    tenant: str = ""
    #: A conversation instead of `prompt`; the engine renders it into `prompt` with
    #: the serving version's chat template, after routing picked that version.
    messages: tuple[ChatTurn, ...] = ()


@dataclasses.dataclass(slots=True)
class EmbedCall:
    """An Embed request as the client sent it."""

    model: str
    inputs: tuple[str, ...]
    normalize: bool = False
    skip_cache: bool = False
    routing_key: str = ""
    tenant: str = ""


@dataclasses.dataclass(slots=True)
class ClassifyCall:
    """A Classify request as the client sent it."""

    model: str
    inputs: tuple[str, ...]
    top_k: int = 0
    skip_cache: bool = False
    routing_key: str = ""
    tenant: str = ""


def _finite(value: float, field: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise InvalidArgument(field, "must be a finite number")
    return value


def validate_routing_key(key: str) -> None:
    if len(key) > MAX_ROUTING_KEY_CHARS:
        raise InvalidArgument("routing_key", f"longer than {MAX_ROUTING_KEY_CHARS} characters")


def validate_generate(call: GenerateCall, limits: Limits) -> GenerationParams:
    """Check a generation request; returns the parameters with defaults filled
    in (max_new_tokens not yet capped by the model's policy)."""
    if call.messages:
        if call.prompt:
            raise InvalidArgument("prompt", "give a prompt or messages, not both")
        validate_messages(call.messages, limits)
    elif not call.prompt.strip():
        raise InvalidArgument("prompt", "required: a non-empty prompt (or messages)")
    if len(call.prompt) > limits.max_prompt_chars:
        raise InvalidArgument(
            "prompt", f"{len(call.prompt)} characters; at most {limits.max_prompt_chars}"
        )
    if call.max_new_tokens < 0:
        raise InvalidArgument("parameters.max_new_tokens", "must be >= 1")
    if call.max_new_tokens > limits.max_new_tokens:
        raise InvalidArgument(
            "parameters.max_new_tokens",
            f"{call.max_new_tokens} exceeds the service limit of {limits.max_new_tokens}",
        )
    temperature = 0.0
    if call.temperature is not None:
        temperature = _finite(call.temperature, "parameters.temperature")
        if not 0.0 <= temperature <= 2.0:
            raise InvalidArgument("parameters.temperature", f"{temperature} is not in [0, 2]")
        if temperature < MIN_SAMPLING_TEMPERATURE:
            temperature = 0.0
    top_p = 1.0
    if call.top_p is not None:
        top_p = _finite(call.top_p, "parameters.top_p")
        if not 0.0 < top_p <= 1.0:
            raise InvalidArgument("parameters.top_p", f"{top_p} is not in (0, 1]")
    if call.top_k < 0:
        raise InvalidArgument("parameters.top_k", "must be >= 0 (0 = off)")
    if len(call.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(
            "parameters.stop", f"{len(call.stop)} stop sequences; at most {MAX_STOP_SEQUENCES}"
        )
    for i, stop in enumerate(call.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidArgument(
                f"parameters.stop[{i}]", f"must be 1..{MAX_STOP_CHARS} characters"
            )
    validate_routing_key(call.routing_key)
    return GenerationParams(
        max_new_tokens=call.max_new_tokens or limits.default_max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=call.top_k,
        stop=tuple(call.stop),
        seed=call.seed,
    )


def validate_messages(turns: tuple[ChatTurn, ...], limits: Limits) -> None:
    """Roles the templates know, names within OpenAI's bound, and the
    conversation's text within the prompt's character limit."""
    for i, turn in enumerate(turns):
        if turn.role not in CHAT_ROLES:
            raise InvalidArgument(
                f"messages[{i}].role", f"{turn.role!r} is not one of {', '.join(CHAT_ROLES)}"
            )
        if len(turn.name) > MAX_CHAT_NAME_CHARS:
            raise InvalidArgument(
                f"messages[{i}].name", f"longer than {MAX_CHAT_NAME_CHARS} characters"
            )
    total = sum(len(turn.content) for turn in turns)
    if total > limits.max_prompt_chars:
        raise InvalidArgument(
            "messages", f"{total} characters of content; at most {limits.max_prompt_chars}"
        )
    if not any(turn.content.strip() for turn in turns):
        raise InvalidArgument("messages", "every message is empty")


def validate_embed(call: EmbedCall | ClassifyCall, limits: Limits) -> None:
    """The texts of an Embed or Classify request (and its routing key)."""
    if not call.inputs:
        raise InvalidArgument("inputs", "required: at least one text")
    if len(call.inputs) > limits.max_batch_size:
        raise InvalidArgument(
            "inputs", f"{len(call.inputs)} texts; at most {limits.max_batch_size} per request"
        )
    for i, text in enumerate(call.inputs):
        if not text.strip():
            raise InvalidArgument(f"inputs[{i}]", "must be a non-empty text")
        if len(text) > limits.max_prompt_chars:
            raise InvalidArgument(
                f"inputs[{i}]", f"{len(text)} characters; at most {limits.max_prompt_chars}"
            )
    validate_routing_key(call.routing_key)


def canonical_generation(prompt: str, params: GenerationParams) -> dict[str, object]:
    """The parts of a request that decide its answer (for the cache key).
    Greedy requests ignore the sampling knobs, so they all share one entry."""
    canonical: dict[str, object] = {
        "op": "generate",
        "prompt": prompt,
        "max_new_tokens": params.max_new_tokens,
        "stop": list(params.stop),
    }
    if not params.greedy:
        canonical.update(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
        )
    return canonical


def validate_classify(call: ClassifyCall, limits: Limits) -> None:
    validate_embed(call, limits)
    if call.top_k < 0:
        raise InvalidArgument("top_k", "must be >= 0 (0 = every label)")


def canonical_classification(inputs: tuple[str, ...]) -> dict[str, object]:
    """Scores of every label are cached; top_k is cut from them per request."""
    return {"op": "classify", "inputs": list(inputs)}


def canonical_embedding(inputs: tuple[str, ...], normalize: bool) -> dict[str, object]:
    return {"op": "embed", "inputs": list(inputs), "normalize": normalize}
