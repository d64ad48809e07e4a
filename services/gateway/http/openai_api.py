"""OpenAI-compatible `/v1`: each endpoint converts JSON to a lattice.v1 request,
awaits the gateway's pipeline (the same `Gateway` the gRPC servicers call),
and converts the answer back. No authentication, quota, routing or cache here.

Lattice specifics a client may notice:
- `model` in a response is the served version, `name:version`; also in the
  `x-lattice-model` header.
- `n` > 1 and a list of prompts are separate Generate calls (each counts
  against the request quota); with a `seed`, choice i samples with seed + i.
- An unset `temperature` is greedy decoding (Lattice's default), not 1.
- `user` is the sticky-routing key.
- `/v1/embeddings` returns L2-normalised vectors, as OpenAI's do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lattice.errors import InvalidArgument, LatticeError, NotFound, Unavailable
from lattice.refs import parse_model_ref
from lattice.v1 import common_pb2, inference_pb2, registry_pb2
from services.gateway.gateway import Call, Gateway
from services.gateway.http.body import read_model
from services.gateway.http.errors import as_lattice_error, http_status, mapped, openai_error_body
from services.gateway.http.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from services.gateway.http.sse import DONE, EventStream, compact_json, event
from services.gateway.stream_limits import IdleTimer
from services.runtime.context import request_id_var

_INFERENCE = "/lattice.v1.InferenceService/"
GENERATE = _INFERENCE + "Generate"
GENERATE_STREAM = _INFERENCE + "GenerateStream"
EMBED = _INFERENCE + "Embed"
MODEL_HEADER = "x-lattice-model"

_FINISH = {
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_EOS: "stop",
    inference_pb2.FINISH_REASON_STOP_SEQUENCE: "stop",
    inference_pb2.FINISH_REASON_CANCELLED: "stop",
}


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP front (from GatewaySettings)."""

    max_body_bytes: int = 4 * 1024 * 1024
    #: A stream that produces nothing for this long is ended with an error event.
    sse_idle_seconds: float = 120.0


def call_of(request: Request, method: str) -> Call:
    """Only the credentials travel into the pipeline: no other header becomes metadata."""
    return Call(
        method, tuple(("authorization", v) for v in request.headers.getlist("authorization"))
    )


def _served(name: str, version: int) -> str:
    return f"{name}:{version}"


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _parameters(
    body: CompletionRequest | ChatCompletionRequest, max_tokens: int | None, choice: int
) -> inference_pb2.GenerationParameters:
    parameters = inference_pb2.GenerationParameters(max_new_tokens=max_tokens or 0, stop=body.stops)
    if body.temperature is not None:
        parameters.temperature = body.temperature
    if body.top_p is not None:
        parameters.top_p = body.top_p
    if body.seed is not None:
        parameters.seed = body.seed + choice
    return parameters


@dataclass(frozen=True)
class _Input:
    """What one choice is generated from: a prompt, or a conversation."""

    prompt: str = ""
    messages: list[inference_pb2.ChatMessage] = field(default_factory=list)


def _embedding(values: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, what the OpenAI SDKs decode
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


class _Chunks:
    """Turns GenerateStream messages into OpenAI stream chunks (completion or chat).

    Most messages carry one token's text and nothing else; their event is the
    stream's fixed JSON around the JSON-encoded text (`encode`), byte for byte
    what `event(of(message))` writes, without building and dumping the dict
    for every token of every stream.
    """

    def __init__(self, chat: bool, model: str) -> None:
        prefix = "chatcmpl" if chat else "cmpl"
        self.chat = chat
        self.base = {
            "id": f"{prefix}-{request_id_var.get()}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._first = True
        self.usage: dict[str, int] | None = None
        head = compact_json(self.base)[:-1]
        field = '"delta":{"content":' if chat else '"text":'
        choice = '{"index":0,"logprobs":null,"finish_reason":null,' + field
        self._text_head = f'data: {head},"choices":[{choice}'.encode()
        self._text_tail = b"}}]}\n\n" if chat else b"}]}\n\n"

    def encode(self, message: inference_pb2.GenerateStreamResponse) -> bytes | None:
        """The SSE event for `message`, or None when it has nothing to send."""
        if (
            message.delta
            and not message.finish_reason
            and not message.HasField("usage")
            and not (self.chat and self._first)
        ):
            self._first = False
            return self._text_head + json.dumps(message.delta).encode() + self._text_tail
        chunk = self.of(message)
        return None if chunk is None else event(chunk)

    def of(self, message: inference_pb2.GenerateStreamResponse) -> dict[str, Any] | None:
        if message.HasField("usage"):
            self.usage = _usage(message.usage)
        finish = _FINISH.get(message.finish_reason)
        if not message.delta and finish is None and not (self.chat and self._first):
            return None
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if self.chat:
            delta: dict[str, str] = {"content": message.delta}
            if self._first:
                delta = {"role": "assistant", **delta}
            choice["delta"] = delta
        else:
            choice["text"] = message.delta
        self._first = False
        return {**self.base, "choices": [choice]}

    def usage_chunk(self) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": self.usage}


class OpenAIRoutes:
    """The `/v1` endpoints over one `Gateway`."""

    def __init__(self, gateway: Gateway, limits: HttpLimits) -> None:
        self._gateway = gateway
        self._limits = limits

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", mapped(self.list_models), methods=["GET"]),
            Route("/v1/models/{id:path}", mapped(self.get_model), methods=["GET"]),
            Route("/v1/completions", mapped(self.completions), methods=["POST"]),
            Route("/v1/chat/completions", mapped(self.chat_completions), methods=["POST"]),
            Route("/v1/embeddings", mapped(self.embeddings), methods=["POST"]),
        ]

    # --- models -------------------------------------------------------------------------

    @staticmethod
    def _card(model: registry_pb2.Model, model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": model.create_time.seconds,
            "owned_by": "lattice",
        }

    async def list_models(self, request: Request) -> Response:
        models = await self._gateway.invokable_models(call_of(request, GENERATE))
        return JSONResponse({"object": "list", "data": [self._card(m, m.name) for m in models]})

    async def get_model(self, request: Request) -> Response:
        ref = parse_model_ref(request.path_params["id"], "id")
        models = await self._gateway.invokable_models(call_of(request, GENERATE))
        for model in models:
            if model.name == ref.name and ref.version <= model.latest_version:
                return JSONResponse(self._card(model, str(ref)))
        raise NotFound(f"model {str(ref)!r} not found")

    # --- generation ---------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        body = await read_model(request, CompletionRequest, self._limits.max_body_bytes)
        inputs = [_Input(prompt=prompt) for prompt in body.prompts]
        return await self._generate(request, body, inputs, body.max_tokens, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        """The messages travel as they are; the serving version renders them with
        its model's chat template (or the default), in inference."""
        body = await read_model(request, ChatCompletionRequest, self._limits.max_body_bytes)
        messages = [
            inference_pb2.ChatMessage(role=m.role, content=m.text, name=m.name or "")
            for m in body.messages
        ]
        return await self._generate(
            request, body, [_Input(messages=messages)], body.token_limit, chat=True
        )

    async def _generate(
        self,
        request: Request,
        body: CompletionRequest | ChatCompletionRequest,
        inputs: list[_Input],
        max_tokens: int | None,
        *,
        chat: bool,
    ) -> Response:
        if body.stream:
            if len(inputs) != 1 or body.n != 1:
                raise InvalidArgument("n", "a stream carries one prompt and n=1")
            stream_request = inference_pb2.GenerateStreamRequest(
                model=body.model,
                prompt=inputs[0].prompt,
                messages=inputs[0].messages,
                parameters=_parameters(body, max_tokens, 0),
                routing_key=body.user or "",
            )
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return await self._stream(request, stream_request, chat, include_usage)
        call = call_of(request, GENERATE)
        unary = [
            inference_pb2.GenerateRequest(
                model=body.model,
                prompt=one.prompt,
                messages=one.messages,
                parameters=_parameters(body, max_tokens, choice),
                routing_key=body.user or "",
            )
            for one in inputs
            for choice in range(body.n)
        ]
        responses = await self._all(call, unary)
        first = responses[0]
        served = _served(first.model_name, first.model_version)
        choices = []
        for index, response in enumerate(responses):
            choice: dict[str, Any] = {
                "index": index,
                "logprobs": None,
                "finish_reason": _FINISH.get(response.finish_reason, "stop"),
            }
            if chat:
                choice["message"] = {"role": "assistant", "content": response.text}
            else:
                choice["text"] = response.text
            choices.append(choice)
        prompt_tokens = sum(r.usage.prompt_tokens for r in responses[:: body.n])
        completion_tokens = sum(r.usage.completion_tokens for r in responses)
        payload = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id_var.get()}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": served,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return JSONResponse(payload, headers={MODEL_HEADER: served})

    async def _all(self, call: Call, requests: list[Any]) -> list[Any]:
        if len(requests) == 1:
            return [await self._gateway.invoke(call, requests[0])]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._gateway.invoke(call, r)) for r in requests]
        except* LatticeError as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _stream(
        self,
        request: Request,
        stream_request: inference_pb2.GenerateStreamRequest,
        chat: bool,
        include_usage: bool,
    ) -> Response:
        stream = self._gateway.invoke_stream(call_of(request, GENERATE_STREAM), stream_request)
        try:
            # Wait for the first message, so that a refusal (401, 404, 429 ...) is
            # still an HTTP status and not an event inside a 200.
            first = await anext(stream)
        except StopAsyncIteration:
            raise Unavailable("the inference service ended the stream without a message") from None
        except BaseException:
            await stream.aclose()
            raise
        served = _served(first.model_name, first.model_version)
        chunks = _Chunks(chat, served)
        events = self._events(stream, first, chunks, include_usage)
        return EventStream(events, headers={MODEL_HEADER: served})

    async def _events(
        self,
        stream: AsyncGenerator[inference_pb2.GenerateStreamResponse, None],
        first: inference_pb2.GenerateStreamResponse,
        chunks: _Chunks,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        """SSE events; closed when the client goes away, which closes `stream`
        and so cancels the upstream call (generation stops)."""
        failed: dict[str, Any] | None = None
        async with contextlib.aclosing(stream):
            try:
                with IdleTimer(self._limits.sse_idle_seconds) as idle:
                    message = first
                    while True:
                        data = chunks.encode(message)
                        if data is not None:
                            yield data
                        idle.waiting()
                        try:
                            message = await anext(stream)
                        except StopAsyncIteration:
                            break
                        except Exception as exc:
                            error = as_lattice_error(exc)
                            failed = openai_error_body(error, http_status(error))
                            break
                        finally:
                            idle.woke()
            except TimeoutError:
                failed = _idle_error(self._limits.sse_idle_seconds)
            if failed is not None:
                yield event(failed)
                return
        if include_usage and chunks.usage is not None:
            yield event(chunks.usage_chunk())
        yield DONE

    # --- embeddings ---------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body = await read_model(request, EmbeddingRequest, self._limits.max_body_bytes)
        embed = inference_pb2.EmbedRequest(
            model=body.model, inputs=body.inputs, normalize=True, routing_key=body.user or ""
        )
        response = await self._gateway.invoke(call_of(request, EMBED), embed)
        served = _served(response.model_name, response.model_version)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _embedding(item.values, body.encoding_format),
            }
            for index, item in enumerate(response.embeddings)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": served,
            "usage": {
                "prompt_tokens": response.usage.prompt_tokens,
                "total_tokens": response.usage.total_tokens,
            },
        }
        return JSONResponse(payload, headers={MODEL_HEADER: served})


def _idle_error(seconds: float) -> dict[str, Any]:
    return {
        "error": {
            "message": f"no token for {seconds:g}s; the stream was ended",
            "type": "timeout_error",
            "param": None,
            "code": "deadline_exceeded",
        }
    }
