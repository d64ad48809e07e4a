"""The floor of any Python HTTP front over inference: `/v1/completions`
streamed as server-sent events, each request forwarded as one gRPC
GenerateStream, and nothing else (no authentication, quotas, routing,
cache, tracing or validation). uvicorn with httptools and Starlette's
StreamingResponse, as a typical FastAPI server streams.

bench/transformers_serve.py `--layers` runs it as a process of its own in
front of the suite's inference service and drives it with the same `openai`
client, beside the gateway's HTTP front: what the gateway costs over this is
its own logic; what this costs is the hop.

    BARE_FRONT_TOKEN=<internal token> .venv/bin/python bench/bare_http_front.py PORT UPSTREAM
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from grpc import aio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from lattice.v1 import inference_pb2, inference_pb2_grpc

FINISH = {
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_EOS: "stop",
    inference_pb2.FINISH_REASON_STOP_SEQUENCE: "stop",
}


def app(upstream: str, token: str) -> Starlette:
    metadata = (("authorization", f"Bearer {token}"),)
    stubs: list[inference_pb2_grpc.InferenceServiceStub] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with aio.insecure_channel(upstream) as channel:  # on the server's loop
            stubs.append(inference_pb2_grpc.InferenceServiceStub(channel))
            yield

    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        call = stubs[0].GenerateStream(
            inference_pb2.GenerateStreamRequest(
                model=body["model"],
                prompt=body["prompt"],
                parameters=inference_pb2.GenerationParameters(max_new_tokens=body["max_tokens"]),
            ),
            metadata=metadata,
        )
        created = int(time.time())

        def event(payload: dict) -> str:
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            usage = None
            async for message in call:
                finish = FINISH.get(message.finish_reason) if message.finish_reason else None
                if message.delta or finish:
                    choice = {"index": 0, "text": message.delta, "finish_reason": finish}
                    yield event(
                        {
                            "id": "bare",
                            "object": "text_completion",
                            "created": created,
                            "model": body["model"],
                            "choices": [choice],
                        }
                    )
                if message.HasField("usage"):
                    usage = message.usage
            if usage is not None:
                yield event(
                    {
                        "id": "bare",
                        "object": "text_completion",
                        "created": created,
                        "model": body["model"],
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                        },
                    }
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    routes = [Route("/v1/completions", completions, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        app(upstream, os.environ["BARE_FRONT_TOKEN"]),
        host="127.0.0.1",
        port=port,
        http="httptools",
        log_level="warning",
        access_log=False,
    )
