"""Fuzz every RPC of every service, directly and through the gateway (issue 21).

Each (front, RPC) pair gets `LATTICE_FUZZ_EXAMPLES` hostile payloads (150 by
default, fixed seed: 300 per RPC over its two fronts) from
`fuzzing.request_bytes`; every answer must keep the contract in
`fuzzing.check_outcome`, and every server must still answer its
health check afterwards. The run ends with a summary line (requests, codes, seconds);
`make fuzz-long` runs the same with more examples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
from tests.reliability.fuzzing import (
    LONG_LIVED,
    SERVICES,
    TALLY,
    call_raw,
    check_outcome,
    request_bytes,
)
from tests.sdk.real_stack import RealStack, running_stack

EXAMPLES = int(os.environ.get("LATTICE_FUZZ_EXAMPLES", "150"))
CASES = [(service, m.name) for service, d in SERVICES.items() for m in d.methods]
_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory) -> RealStack:
    """A stack of its own: fuzzed UpdateDeployment/DeleteModel calls may change it."""
    model_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("model"), n_positions=128)
    encoder_dir = build_tiny_encoder(tmp_path_factory.mktemp("encoder"))
    yield from running_stack(tmp_path_factory.mktemp("fuzz"), model_dir, encoder_dir)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return answer.status == health_pb2.HealthCheckResponse.SERVING


# Servers on the stack's thread use `random` (weighted routing) while hypothesis draws.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("front", ["direct", "gateway"])
@pytest.mark.parametrize(("service", "name"), CASES)
def test_hostile_requests_get_documented_codes(fuzz_stack, front, service, name):
    method = SERVICES[service].methods_by_name[name]
    path = f"/{SERVICES[service].full_name}/{name}"
    address = fuzz_stack.gateway if front == "gateway" else fuzz_stack.address(service)
    metadata = [("authorization", f"Bearer {fuzz_stack.token_for(address)}")]
    server_paths = (str(fuzz_stack.root), str(Path.cwd()), sys.prefix)
    modes = ["cancel", "abandon"] if name in LONG_LIVED else ["read", "cancel", "abandon"]
    batch = 3 if method.client_streaming else 1

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        payloads=st.lists(request_bytes(method), min_size=1, max_size=batch),
        mode=st.sampled_from(modes),
    )
    def one(payloads: list[bytes], mode: str) -> None:
        outcome = call_raw(channel, path, method, payloads, metadata, timeout=15, stream_mode=mode)
        TALLY.count(outcome)
        check_outcome(outcome, server_paths)

    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        one()
    for server in ("gateway", service):
        assert _serving(fuzz_stack.address(server)), f"{server} stopped serving"
