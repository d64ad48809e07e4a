"""Settings from flags and `LATTICE_*` environment variables.

A service declares its settings as a dataclass with defaults that need
nothing installed. `load_settings` turns every field into a `--flag`; its
default comes from `LATTICE_<SERVICE>_<FIELD>`, then `LATTICE_<FIELD>`, then
the dataclass. Nothing is read at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="ServerSettings")


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What every Lattice server needs; services extend it."""

    host: str = "127.0.0.1"
    port: int = 0
    #: Prometheus /metrics HTTP port; 0 picks a free one, -1 turns it off.
    metrics_port: int = -1
    #: Seconds that in-flight RPCs get to finish on SIGTERM.
    grace_seconds: float = 10.0
    #: Largest request or response message, in bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    data_dir: Path = Path(".lattice")
    log_level: str = "INFO"
    #: Emit JSON log lines (one per event) instead of plain text.
    log_json: bool = True
    #: One INFO line per served RPC (logger "lattice.rpc"); failures are logged either way.
    access_log: bool = True
    #: Access log lines of successful RPCs are written in batches, at most this many
    #: ms after the call (one write per batch, not per call); 0 writes each at once.
    #: Failures are always written at once.
    access_log_flush_ms: float = 50.0
    #: Offer gRPC server reflection (grpcurl list/describe).
    reflection: bool = True
    #: The suite's key ring (internal tokens, cache sealing, artifact signatures);
    #: empty = <data_dir>/keys/keyring.json, created on first use.
    key_ring_file: str = ""
    #: Lifetime of the internal caller tokens this service signs.
    internal_token_seconds: float = 300.0
    #: Server TLS (PEM) for the gRPC listener and /metrics; with tls_client_ca_file,
    #: gRPC callers need a client certificate
    #: from that CA (mutual TLS). Empty = plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    #: CA to trust when calling other suite services; the calls then use TLS and
    #: present tls_cert_file/tls_key_file as the client certificate.
    tls_ca_file: str = ""
    #: Close each connection after this many seconds, with a grace period for its
    #: in-flight calls, so clients reconnect and rebalance (0 = never).
    max_connection_age_seconds: float = 0.0
    max_connection_age_grace_seconds: float = 30.0
    #: Concurrent calls on one client connection (0 = gRPC's default).
    max_concurrent_streams: int = 0
    #: Liveness: exit (to be restarted) when the event loop has not turned for this
    #: many seconds, after dumping every thread's stack; 0 = never.
    loop_stall_exit_seconds: float = 60.0


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _converter(kind: Any):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _converter(inner[0])
    if origin is tuple:
        (item_type, *_) = typing.get_args(kind) or (str,)
        item = _converter(item_type)
        return lambda raw: tuple(item(p.strip()) for p in raw.split(",") if p.strip())
    if kind is bool:
        return _parse_bool
    if kind is Path:
        return Path
    return kind


def _parse_bool(raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {raw!r}")


def env_names(service: str, field: str) -> tuple[str, str]:
    """The environment variables consulted for a field, most specific first."""
    upper = field.upper()
    return (f"LATTICE_{service.upper()}_{upper}", f"LATTICE_{upper}")


def load_settings(
    cls: type[T],
    service: str,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> T:
    """Build `cls` from flags (highest precedence), environment, then defaults."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog=f"lattice serve {service}",
        description=f"Run the Lattice {service} service.",
        argument_default=argparse.SUPPRESS,
    )
    kinds = _field_types(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        convert = _converter(kinds[field.name])
        names = env_names(service, field.name)
        for name in names:
            if name in env:
                try:
                    values[field.name] = convert(env[name])
                except (ValueError, argparse.ArgumentTypeError) as exc:
                    raise SystemExit(f"{name}: {exc}") from None
                break
        default = field.default if field.default is not dataclasses.MISSING else None
        repeatable = typing.get_origin(kinds[field.name]) is tuple
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=convert,
            # A tuple flag may be given again (`--source-root a --source-root b`) as
            # well as comma-separated.
            action="extend" if repeatable else "store",
            help=f"(env {names[0]} or {names[1]}; default {default!r})",
        )
    parsed = vars(parser.parse_args(argv))
    values.update({k: tuple(v) if isinstance(v, list) else v for k, v in parsed.items()})
    return cls(**values)
