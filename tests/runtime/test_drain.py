"""SIGTERM drains a real server process: NOT_SERVING, in-flight streams finish, exit 0."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime.watchdog import EXIT_STALLED
from services.suite.ports import free_port
from tests.support.health import wait_serving

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_sigterm_drains_in_flight_stream_then_exits_zero(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.runtime.servicers",
        "--port",
        str(port),
        "--grace-seconds",
        "5",
        "--data-dir",
        str(tmp_path),
    )
    try:
        await wait_serving(address, process=process)
        async with grpc.aio.insecure_channel(address) as channel:
            health_updates = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="lattice.v1.InferenceService")
            )
            assert (await health_updates.read()).status == SERVING
            stream = inference_pb2_grpc.InferenceServiceStub(channel).GenerateStream(
                inference_pb2.GenerateStreamRequest(
                    prompt="p", parameters=inference_pb2.GenerationParameters(max_new_tokens=10)
                )
            )
            first = await stream.read()
            process.send_signal(signal.SIGTERM)
            assert (await health_updates.read()).status == NOT_SERVING
            rest = []
            while (message := await stream.read()) is not grpc.aio.EOF:
                rest.append(message)
            assert [m.index for m in [first, *rest]] == list(range(10))
            assert await stream.code() == grpc.StatusCode.OK
        started = time.monotonic()
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_process_whose_event_loop_hangs_exits_to_be_restarted(tmp_path):
    """Issue 21, defects 6 and 9: a hung process held its port and was never restarted."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.runtime.servicers",
        "--port",
        str(port),
        "--loop-stall-exit-seconds",
        "1",
        "--data-dir",
        str(tmp_path),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_serving(address, process=process)
        async with grpc.aio.insecure_channel(address) as channel:
            call = inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                inference_pb2.GenerateRequest(prompt="block:30"), timeout=20
            )
            started = time.monotonic()
            assert await asyncio.wait_for(process.wait(), 10) == EXIT_STALLED
            assert time.monotonic() - started < 5
            call.cancel()
        stderr = (await process.stderr.read()).decode()
        assert "Thread" in stderr and "servicers.py" in stderr  # the stack of the hang
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
