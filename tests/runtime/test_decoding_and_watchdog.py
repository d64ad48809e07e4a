"""Request decoding that never raises into grpc, error clipping, and the loop watchdog,
driven directly (no gRPC server): the pieces behind issue 21's bad-input and liveness fixes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from google.rpc import error_details_pb2

from lattice.errors import MAX_MESSAGE_CHARS, InvalidArgument, NotFound, Unavailable
from lattice.v1 import inference_pb2
from services.runtime.decoding import Encoded, Malformed, decoded, raise_if_malformed, tolerant
from services.runtime.watchdog import LoopWatchdog


def test_tolerant_deserializer_answers_malformed_instead_of_raising():
    parse = tolerant(inference_pb2.GenerateRequest.FromString)
    good = inference_pb2.GenerateRequest(model="m", prompt="p").SerializeToString()
    assert parse(good).prompt == "p"
    bad = parse(b"\xff\xff\xff")
    assert isinstance(bad, Malformed)
    with pytest.raises(InvalidArgument) as caught:
        raise_if_malformed(bad)
    assert caught.value.field == "request"
    assert "lattice.v1.GenerateRequest" in caught.value.message


def test_encoded_requests_parse_on_demand_within_a_size_cap():
    data = inference_pb2.GenerateRequest(prompt="x" * 100).SerializeToString()
    assert decoded(Encoded(data, inference_pb2.GenerateRequest)).prompt == "x" * 100
    with pytest.raises(InvalidArgument, match="at most 10"):
        decoded(Encoded(data, inference_pb2.GenerateRequest), max_bytes=10)
    with pytest.raises(InvalidArgument):
        decoded(Encoded(b"\x0a\x05ab", inference_pb2.GenerateRequest))  # truncated
    message = inference_pb2.GenerateRequest(prompt="as is")
    assert decoded(message) is message


def test_status_messages_and_field_descriptions_are_clipped():
    echoed = "x" * 1_000_000
    for error in (NotFound(f"job {echoed!r} not found"), InvalidArgument("job_id", echoed)):
        status = error.to_status()
        assert len(status.details) <= MAX_MESSAGE_CHARS
        for key, value in status.trailing_metadata:
            assert len(value) < 4 * MAX_MESSAGE_CHARS, key


def test_unavailable_always_says_when_to_retry():
    details = Unavailable("down").details
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)
    assert Unavailable("down").retry_after == 1.0
    assert Unavailable("down", retry_after=5).retry_after == 5


def test_watchdog_fires_only_when_the_loop_stalls():
    stalls: list[float] = []
    fired = threading.Event()

    def on_stall(seconds: float) -> None:
        stalls.append(seconds)
        fired.set()

    async def healthy_then_blocked() -> None:
        watchdog = LoopWatchdog(asyncio.get_running_loop(), 0.3, on_stall=on_stall)
        watchdog.start()
        await asyncio.sleep(0.8)  # turning: no stall
        assert stalls == []
        time.sleep(0.8)  # noqa: ASYNC251 - blocking the loop is the point
        watchdog.stop()

    asyncio.run(healthy_then_blocked())
    assert fired.wait(2)
    assert stalls and stalls[0] >= 0.3
