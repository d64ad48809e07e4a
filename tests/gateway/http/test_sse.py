"""EventStream's own disconnect handling (one listener task instead of Starlette's
anyio task group), driven through its ASGI interface. The real servers' disconnects
(uvicorn, hypercorn h2) are in test_streaming and test_http2."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.http.sse import EventStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Upstream:
    """Events that never end on their own, and whether they were closed."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = asyncio.Event()

    async def events(self):
        try:
            while True:
                yield b"data: {}\n\n"
                self.sent += 1
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()


async def test_a_disconnect_ends_the_response_quietly_and_closes_the_events():
    upstream = Upstream()
    messages = []

    async def receive():
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    await EventStream(upstream.events(), {})(SCOPE, receive, send)
    assert upstream.closed.is_set() and upstream.sent >= 2
    assert messages[0]["type"] == "http.response.start"
    assert not any(m.get("more_body") is False for m in messages)  # cut, not completed
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending on this task


async def test_a_complete_stream_leaves_no_listener_or_cancellation_behind():
    async def three():
        for _ in range(3):
            yield b"data: {}\n\n"

    async def receive():
        await asyncio.Event().wait()  # the client never leaves

    messages = []

    async def send(message):
        messages.append(message)

    before = len(asyncio.all_tasks())
    await EventStream(three(), {})(SCOPE, receive, send)
    assert [m.get("more_body") for m in messages[1:]] == [True, True, True, False]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    upstream = Upstream()

    async def receive():
        await asyncio.Event().wait()

    async def send(message):
        pass

    task = asyncio.create_task(EventStream(upstream.events(), {})(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream.closed.is_set()


async def test_a_failing_receive_ends_the_stream_and_is_raised():
    upstream = Upstream()

    async def receive():
        await asyncio.sleep(0.05)
        raise RuntimeError("the server lost the connection state")

    async def send(message):
        pass

    with pytest.raises(RuntimeError, match="connection state"):
        await EventStream(upstream.events(), {})(SCOPE, receive, send)
    assert upstream.closed.is_set()
