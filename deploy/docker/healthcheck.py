#!/usr/bin/env python3
"""Exit 0 iff a Lattice server answers grpc.health.v1 SERVING.

For Docker HEALTHCHECK and docker-compose, which have no native gRPC probe
(Kubernetes uses its own `grpc:` probes instead). Usage:
    lattice-healthcheck [HOST:PORT] [SERVICE]
SERVICE defaults to "" (the whole server); e.g. lattice.v1.InferenceService.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 3.0


def check(target: str, service: str = "") -> int:
    """0 when SERVING, 1 otherwise (reason on stderr)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"{target} {service or '(server)'}: {name}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "127.0.0.1:50051"
    service = argv[2] if len(argv) > 2 else ""
    return check(target, service)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
