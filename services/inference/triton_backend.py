"""The Triton backend: one model version served by an NVIDIA Triton server.

Speaks the KServe v2 gRPC protocol through `tritonclient.grpc.aio`, using the
tensor contract that `triton_export` writes (PROMPT, MAX_NEW_TOKENS, ... in;
TEXT, TOKEN_IDS, FINISH_REASON, PROMPT_TOKENS, COMPLETION_TOKENS out; TEXT and
NORMALIZE in, EMBEDDING and TOKEN_COUNT out for encoders):

- unary generation: `ModelInfer` on a non-decoupled model, the request built
  and the response read as protobuf directly (`kserve`); on a decoupled
  (token-streaming) model the stream is collected;
- streaming: the bidirectional `ModelStreamInfer` RPC; closing the iterator
  cancels the call, and Triton cancels the request in the model;
- readiness: `ModelReady`; Triton unreachable -> `Unavailable`;
- every call is a CLIENT span with W3C trace context injected into the
  request headers, and carries the inbound request id and deadline.

Where Triton is: `artifact_uri` `triton://host:port/model[/version]`, else the
version's params/tags `triton_address`, `triton_model`, `triton_model_version`,
else the `default_address` this backend was built with; the model name falls
back to the one in the version's artifact (an exported repository) and then to
the version's model name. When the artifact is an exported repository, its
tokenizer is loaded too, so prompt-length limits are enforced before Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc import aio
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from lattice.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LatticeError,
    Unavailable,
)
from services.inference import kserve
from services.inference.backends import (
    Backend,
    EmbeddingResult,
    FinishReason,
    GenerationParams,
    GenerationResult,
    LoadSpec,
    ModelInfo,
    StreamChunk,
    Task,
)
from services.inference.chat import ChatRenderer, ChatTurn
from services.runtime.context import REQUEST_ID_KEY, remaining_time, request_id_var
from services.runtime.remote_targets import RemoteAllowlist

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SCHEME = "triton://"
_FINISH = {reason.value: reason for reason in FinishReason}
# Triton input name -> the Lattice request field to name in INVALID_ARGUMENT.
_FIELDS = {
    "PROMPT": "prompt",
    "MAX_NEW_TOKENS": "parameters.max_new_tokens",
    "TEMPERATURE": "parameters.temperature",
    "TOP_P": "parameters.top_p",
    "TOP_K": "parameters.top_k",
    "SEED": "parameters.seed",
    "STOP": "parameters.stop",
    "TEXT": "inputs",
}
_GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclasses.dataclass(frozen=True, slots=True)
class TritonTarget:
    """Which Triton serves a version, and under which model name/version."""

    address: str
    model: str
    model_version: str = ""

    @property
    def uri(self) -> str:
        suffix = f"/{self.model_version}" if self.model_version else ""
        return f"{SCHEME}{self.address}/{self.model}{suffix}"


def parse_triton_uri(uri: str) -> TritonTarget:
    """`triton://host:port/model[/version]` -> TritonTarget."""
    parts = urlsplit(uri)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme != "triton" or not parts.netloc or not 1 <= len(path) <= 2:
        raise InvalidArgument("artifact_uri", f"{uri!r} is not triton://host:port/model[/version]")
    if len(path) == 2 and not path[1].isdigit():
        raise InvalidArgument("artifact_uri", f"Triton model version {path[1]!r} is not a number")
    return TritonTarget(parts.netloc, path[0], path[1] if len(path) == 2 else "")


def resolve_target(spec: LoadSpec, default_address: str | None = None) -> TritonTarget:
    """Where the version in `spec` is served (see the module docstring)."""
    if spec.artifact_uri.startswith(SCHEME):
        return parse_triton_uri(spec.artifact_uri)
    settings: Mapping[str, str] = {**spec.tags, **spec.params}
    address = settings.get("triton_address") or default_address
    if not address:
        raise FailedPrecondition(
            f"{spec.model_name}:{spec.version} has no Triton address: use a "
            "triton://host:port/model artifact URI, a triton_address param, "
            "or set the inference service's Triton address"
        )
    model = settings.get("triton_model") or repository_model_name(spec.model_dir) or spec.model_name
    return TritonTarget(address, model, settings.get("triton_model_version", ""))


def repository_model_name(model_dir: Path | None) -> str | None:
    """The model an exported repository artifact holds (one `config.pbtxt`), if any."""
    if model_dir is None:
        return None
    configs = sorted(model_dir.glob("config.pbtxt")) or sorted(model_dir.glob("*/config.pbtxt"))
    if len(configs) != 1:
        return None
    named = re.search(r'^name:\s*"([^"]+)"', configs[0].read_text(), re.M)
    return named.group(1) if named else configs[0].parent.name


def _load_tokenizer(model_dir: Path) -> tuple[PreTrainedTokenizerBase | None, int | None]:
    """(tokenizer, context length) of the HF directory inside an exported repository."""
    found = sorted(model_dir.rglob("tokenizer_config.json"), key=lambda p: len(p.parts))
    if not found:
        return None, None
    from transformers import AutoTokenizer

    hf_dir = found[0].parent
    config = json.loads((hf_dir / "config.json").read_text())
    context = config.get("n_positions") or config.get("max_position_embeddings")
    return AutoTokenizer.from_pretrained(hf_dir), context


def _array_input(name: str, value: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def generate_inputs(prompt: str, params: GenerationParams) -> list[grpcclient.InferInput]:
    """The request tensors for the exported generate model."""
    inputs = [
        _array_input("PROMPT", np.array([prompt.encode("utf-8")], dtype=np.object_), "BYTES"),
        _array_input("MAX_NEW_TOKENS", np.array([params.max_new_tokens], dtype=np.int32), "INT32"),
    ]
    if not params.greedy:
        inputs.append(
            _array_input("TEMPERATURE", np.array([params.temperature], dtype=np.float32), "FP32")
        )
        inputs.append(_array_input("TOP_P", np.array([params.top_p], dtype=np.float32), "FP32"))
        inputs.append(_array_input("TOP_K", np.array([params.top_k], dtype=np.int32), "INT32"))
        if params.seed is not None:
            seed = np.array([params.seed], dtype=np.uint64)
            inputs.append(_array_input("SEED", seed, "UINT64"))
    if params.stop:
        stops = np.array([s.encode("utf-8") for s in params.stop], dtype=np.object_)
        inputs.append(_array_input("STOP", stops, "BYTES"))
    return inputs


def _text(result: grpcclient.InferResult, name: str) -> str:
    value = result.as_numpy(name)
    if value is None or value.size == 0:
        return ""
    item = value.reshape(-1)[0]
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _int(result: grpcclient.InferResult, name: str) -> int:
    value = result.as_numpy(name)
    return int(value.reshape(-1)[0]) if value is not None and value.size else 0


def _field_for(message: str) -> str:
    return next((field for name, field in _FIELDS.items() if name in message), "parameters")


def map_triton_error(error: Exception, target: TritonTarget) -> LatticeError:
    """The most specific Lattice error for a failed Triton call."""
    if isinstance(error, LatticeError):
        return error
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        status, message = f"StatusCode.{error.code().name}", error.details() or ""
    elif isinstance(error, InferenceServerException):
        status, message = error.status() or "", error.message() or str(error)
    else:
        status, message = "", str(error)
    where = f"Triton {target.uri}"
    if status == "StatusCode.INVALID_ARGUMENT" or message.startswith("invalid input: "):
        return InvalidArgument(_field_for(message), message.removeprefix("invalid input: "))
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"{where} did not answer before the deadline")
    if status in ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED"):
        return Unavailable(f"{where} cannot serve now: {message}")
    if "unknown model" in message or "is not ready" in message:
        return Unavailable(f"{where} cannot serve now: {message}")
    return Internal(f"{where} failed: {message}")


class TritonBackend(Backend):
    """One model version on a Triton server (see the module docstring)."""

    kind = "triton"

    def __init__(
        self,
        spec: LoadSpec,
        *,
        default_address: str | None = None,
        allowlist: RemoteAllowlist | None = None,
        timeout: float = 60.0,
        ready_timeout: float = 30.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """`allowlist`: addresses a version may name besides `default_address`
        (the operator's own); checked before any connection is made."""
        super().__init__(spec)
        self._default_address = default_address
        self._allowlist = allowlist
        self._timeout = timeout
        self._ready_timeout = ready_timeout
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(__name__)
        self._client: aioclient.InferenceServerClient | None = None
        # A plain stub for unary ModelInfer (see `kserve`); tritonclient for the rest.
        self._channel: aio.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None
        self.target: TritonTarget | None = None
        self.decoupled = False
        self.triton_max_batch_size = 0
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._chat = ChatRenderer(None, spec.model_name)

    # -- lifecycle ---------------------------------------------------------------

    async def load(self) -> ModelInfo:
        """Connect, wait until Triton reports the model ready, read its config."""
        self.target = target = resolve_target(self.spec, self._default_address)
        if self._allowlist is not None and target.address != self._default_address:
            self._allowlist.check(target.address, "artifact_uri")
        self._client = aioclient.InferenceServerClient(target.address, channel_args=_GRPC_OPTIONS)
        self._channel = aio.insecure_channel(target.address, options=_GRPC_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        with self._span("ModelReady"):
            deadline = time.monotonic() + self._ready_timeout
            while not await self._model_ready(timeout=min(5.0, self._ready_timeout)):
                if time.monotonic() > deadline:
                    await self.unload()
                    raise Unavailable(f"Triton model {target.uri} is not ready")
                await asyncio.sleep(0.2)
        try:
            return await self._describe(target)
        except BaseException:
            await self.unload()  # a failed load holds no connection
            raise

    async def _describe(self, target: TritonTarget) -> ModelInfo:
        """Transaction policy, batch size and contract from the model config."""
        client, _target = self._ready_client()
        try:
            config = (
                await client.get_model_config(
                    target.model, target.model_version, as_json=True, client_timeout=5.0
                )
            )["config"]
        except InferenceServerException as exc:
            raise map_triton_error(exc, target) from None
        self.decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled"))
        self.triton_max_batch_size = int(config.get("max_batch_size", 0))
        self._check_contract(config, target)
        context = None
        if self.spec.model_dir is not None:
            self._tokenizer, context = await asyncio.to_thread(_load_tokenizer, self.spec.model_dir)
            self._chat = ChatRenderer(self._tokenizer, self.spec.model_name)
        return ModelInfo(context_length=context if self.spec.task is Task.GENERATE else None)

    def count_tokens(self, text: str) -> int | None:
        """From the artifact's tokenizer when the version ships one, else unknown."""
        if self._tokenizer is None:
            return None
        return len(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """Rendered here, before Triton: the exported model takes a PROMPT text,
        and the artifact's tokenizer carries the template (a version without an
        artifact, a bare `triton://` URI, gets the default template)."""
        return self._chat.render(turns)

    def _check_contract(self, config: dict[str, Any], target: TritonTarget) -> None:
        names = {i["name"] for i in config.get("input", [])}
        needed = {"PROMPT"} if self.spec.task is Task.GENERATE else {"TEXT"}
        if not needed <= names:
            raise FailedPrecondition(
                f"Triton model {target.uri} takes inputs {sorted(names)}, not the "
                f"Lattice {self.spec.task.value} contract {sorted(needed)}; export it with "
                "`lattice export-triton`"
            )

    async def unload(self) -> None:
        self._tokenizer = None
        self._chat = ChatRenderer(None, self.spec.model_name)
        client, self._client = self._client, None
        channel, self._channel, self._stub = self._channel, None, None
        if client is not None:
            await client.close()
        if channel is not None:
            await channel.close()

    async def health(self) -> bool:
        return self._client is not None and await self._model_ready(timeout=2.0)

    async def _model_ready(self, timeout: float) -> bool:
        client, target = self._ready_client()
        try:
            return await client.is_model_ready(
                target.model, target.model_version, client_timeout=timeout
            )
        except (InferenceServerException, grpc.RpcError):
            return False

    # -- serving -----------------------------------------------------------------

    async def generate(self, prompt: str, params: GenerationParams) -> GenerationResult:
        _client, target = self._ready_client()
        if self.decoupled:  # ModelInfer cannot call a decoupled model: collect the stream
            parts, last = [], None
            async with contextlib.aclosing(self.stream(prompt, params)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk.delta)
                    last = chunk
            if last is None or last.finish_reason is None:  # stream() ends with one or raises
                raise Unavailable(f"Triton {target.uri} ended the stream without a final response")
            return GenerationResult(
                "".join(parts), last.prompt_tokens, last.completion_tokens, last.finish_reason
            )
        stub = self._stub
        if stub is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} is not loaded on Triton")
        request = kserve.generate_request(
            target.model, target.model_version, request_id_var.get(), _checked(prompt), params
        )
        with self._span("ModelInfer", params) as (span, headers):
            try:
                response = await stub.ModelInfer(
                    request, metadata=tuple(headers.items()), timeout=self._call_timeout()
                )
                outputs = kserve.Outputs(response)
            except (grpc.RpcError, ValueError) as exc:
                raise map_triton_error(exc, target) from None
            out = GenerationResult(
                text=outputs.text("TEXT"),
                prompt_tokens=outputs.integer("PROMPT_TOKENS"),
                completion_tokens=outputs.integer("COMPLETION_TOKENS"),
                finish_reason=_FINISH.get(outputs.text("FINISH_REASON"), FinishReason.LENGTH),
            )
            span.set_attribute("gen_ai.usage.output_tokens", out.completion_tokens)
            return out

    async def stream(
        self, prompt: str, params: GenerationParams
    ) -> AsyncGenerator[StreamChunk, None]:
        """Token deltas over `ModelStreamInfer`; leaving early cancels the call."""
        client, target = self._ready_client()
        request = {
            "model_name": target.model,
            "model_version": target.model_version,
            "inputs": generate_inputs(_checked(prompt), params),
            "request_id": request_id_var.get(),
        }  # the exported model always ends with a FINAL response that carries data
        finished = asyncio.Event()

        async def one_request():
            yield request
            await finished.wait()  # keep our half open until the final response

        with self._span("ModelStreamInfer", params) as (span, headers):
            responses = client.stream_infer(
                one_request(), stream_timeout=remaining_time(), headers=headers
            )
            produced = 0
            try:
                async for result, error in responses:
                    if error is not None:
                        raise map_triton_error(error, target)
                    finish = _text(result, "FINISH_REASON")
                    if finish or _final(result):
                        chunk = StreamChunk(
                            delta=_text(result, "TEXT"),
                            finish_reason=_FINISH.get(finish, FinishReason.CANCELLED),
                            prompt_tokens=_int(result, "PROMPT_TOKENS"),
                            completion_tokens=_int(result, "COMPLETION_TOKENS") or produced,
                        )
                        span.set_attribute("gen_ai.usage.output_tokens", chunk.completion_tokens)
                        finished.set()
                        yield chunk
                        return
                    produced += 1
                    delta = _text(result, "TEXT")
                    if delta:  # a token that completes no character yet is not worth a message
                        yield StreamChunk(delta=delta)
                raise Unavailable(f"Triton {target.uri} ended the stream without a final response")
            except (InferenceServerException, grpc.RpcError) as exc:
                raise map_triton_error(exc, target) from None
            finally:
                if not finished.is_set():
                    finished.set()
                    responses.cancel()  # Triton cancels the request; the model stops

    async def embed(self, texts: Sequence[str], *, normalize: bool) -> EmbeddingResult:
        client, target = self._ready_client()
        if not texts or any(not t for t in texts):
            raise InvalidArgument("inputs", "need at least one text, each non-empty")
        size = self.triton_max_batch_size or len(texts)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        with self._span("ModelInfer") as (span, headers):
            try:
                results = await asyncio.gather(
                    *(self._embed_chunk(client, target, c, normalize, headers) for c in chunks)
                )
            except InferenceServerException as exc:
                raise map_triton_error(exc, target) from None
            vectors = [row for result in results for row in result.as_numpy("EMBEDDING").tolist()]
            counts = [int(c) for r in results for c in r.as_numpy("TOKEN_COUNT").reshape(-1)]
            span.set_attribute("gen_ai.usage.input_tokens", sum(counts))
            return EmbeddingResult(vectors=vectors, token_counts=counts)

    async def _embed_chunk(self, client, target, texts, normalize, headers):
        encoded = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        flags = np.full((len(texts), 1), bool(normalize))
        inputs = [_array_input("TEXT", encoded, "BYTES"), _array_input("NORMALIZE", flags, "BOOL")]
        if self.triton_max_batch_size == 0:  # an unbatched model takes flat tensors
            inputs = [
                _array_input("TEXT", encoded.reshape(-1), "BYTES"),
                _array_input("NORMALIZE", flags.reshape(-1)[:1], "BOOL"),
            ]
        return await client.infer(
            target.model,
            inputs,
            target.model_version,
            request_id=request_id_var.get(),
            client_timeout=self._call_timeout(),
            headers=headers,
        )

    # -- helpers -----------------------------------------------------------------

    def _ready_client(self) -> tuple[aioclient.InferenceServerClient, TritonTarget]:
        if self._client is None or self.target is None:
            raise Unavailable(f"{self.spec.model_name}:{self.spec.version} is not loaded on Triton")
        return self._client, self.target

    def _call_timeout(self) -> float:
        inbound = remaining_time()
        return self._timeout if inbound is None else max(0.0, min(self._timeout, inbound))

    def _span(self, method: str, params: GenerationParams | None = None):
        return _TritonSpan(self, method, params)


class _TritonSpan:
    """A CLIENT span around one Triton RPC, yielding (span, headers to send).

    The span is a child of the caller's current span but is never made current
    itself: `stream` holds it across `yield`s, where attaching a context would
    be detached from whichever task happens to close the generator.
    """

    __slots__ = ("_backend", "_method", "_params", "_span")

    def __init__(self, backend: TritonBackend, method: str, params: GenerationParams | None):
        self._backend, self._method, self._params = backend, method, params

    def __enter__(self):
        backend, target = self._backend, self._backend.target
        self._span = span = backend._tracer.start_span(
            f"inference.GRPCInferenceService/{self._method}", kind=SpanKind.CLIENT
        )
        if span.is_recording():  # attribute work only for a span that is kept
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", "inference.GRPCInferenceService")
            span.set_attribute("rpc.method", self._method)
            if target is not None:
                span.set_attribute("server.address", target.address)
                span.set_attribute("triton.model_name", target.model)
            span.set_attribute("lattice.model", f"{backend.spec.model_name}:{backend.spec.version}")
            if self._params is not None:
                span.set_attribute("gen_ai.request.max_tokens", self._params.max_new_tokens)
                span.set_attribute("gen_ai.request.temperature", self._params.temperature)
        headers: dict[str, str] = {}
        if span.get_span_context().is_valid:  # else there is no trace to pass on
            inject(headers, context=trace.set_span_in_context(span))
        request_id = request_id_var.get()
        if request_id:
            headers[REQUEST_ID_KEY] = request_id
        return span, headers

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
            self._span.set_status(Status(StatusCode.ERROR, str(exc)))
            self._span.record_exception(exc)
        self._span.end()
        return False


def _checked(prompt: str) -> str:
    if not prompt:
        raise InvalidArgument("prompt", "must be a non-empty string")
    return prompt


def _final(result: grpcclient.InferResult) -> bool:
    flag = result.get_response().parameters.get("triton_final_response")
    return bool(flag is not None and flag.bool_param)
