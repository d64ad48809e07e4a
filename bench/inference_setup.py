"""What every inference benchmark shares: the servers' process set up the way
`run_service` sets up a real service, so figures are taken with production
defaults (access log on, JSON lines; tracing as configured by the environment:
without an OTLP endpoint spans are not recorded, trace context still propagates).

The access log goes to a file instead of this terminal; a service writes the
same lines to stderr (a pipe to the log collector).

The inference service takes only calls that carry an internal token. The
benchmarks sign theirs as the embedded lab's operator (tenant "acme", who owns
the models they deploy) with one token minted up front and sent as plain
metadata, so a client pays nothing per call that the service's real callers
(the gateway) would not, and the server verifies a token as in production.
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.runtime.internal_tokens import AUTHORIZATION_KEY, TokenMinter
from services.runtime.logs import configure_logging
from services.runtime.telemetry import exporter_configured, install_global_tracing
from services.suite.embedded import OPERATOR
from services.suite.signing import key_ring

#: Metadata that signs a call: pass as `metadata=` on every call.
Signed = tuple[tuple[str, str], ...]


def as_run_service(log_file: Path, service: str = "inference") -> str:
    """Logging and tracing as `run_service` installs them; returns a one-line
    description of those settings for the benchmark's output."""
    stream = log_file.open("a", buffering=1)
    saved, sys.stderr = sys.stderr, stream
    try:
        configure_logging(service)  # the handler keeps the stream it finds now
    finally:
        sys.stderr = saved
    install_global_tracing(service)
    spans = "recorded, OTLP export" if exporter_configured() else "not recorded (no OTLP endpoint)"
    return f"production defaults: access log on (JSON lines to a file), spans {spans}"


def signed_metadata(data_dir: Path, lifetime: float = 3600.0) -> Signed:
    """Metadata that signs calls to the inference service whose key ring is in
    `data_dir`, as the lab's operator, for `lifetime` seconds (longer than a run)."""
    minter = TokenMinter(
        key_ring(data_dir), audience="inference", service=OPERATOR, lifetime=lifetime
    )
    return ((AUTHORIZATION_KEY, f"Bearer {minter.token(OPERATOR)}"),)
