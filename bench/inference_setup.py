"""What every inference benchmark shares: the servers' process set up the way
`run_service` sets up a real service, so figures are taken with production
defaults (access log on, JSON lines; tracing as configured by the environment:
without an OTLP endpoint spans are not recorded, trace context still propagates).

The access log goes to a file instead of this terminal; a service writes the
same lines to stderr (a pipe to the log collector).
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.runtime.logs import configure_logging
from services.runtime.telemetry import exporter_configured, install_global_tracing


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
