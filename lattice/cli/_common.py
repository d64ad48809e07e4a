"""What every client command shares: connection options, one-line errors, output.

Each command gets `--target/--token/--tls-*` (or LATTICE_* variables),
`--timeout` and `--json`. A failure prints one line (`error: CODE: message`)
to stderr and exits non-zero; no traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from lattice._client import Client
from lattice._config import DEFAULT_TARGET
from lattice.errors import LatticeError, Unauthenticated, Unavailable, from_rpc_error

#: Exit codes: 1 for a failed call or bad input, 130 after Ctrl-C (click's usage errors: 2).
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclasses.dataclass
class Session:
    """The parsed connection options of one command, and its output mode."""

    target: str
    token: str | None
    tls: bool | None
    root_cert: str | None
    client_cert: str | None
    client_key: str | None
    timeout: float | None
    as_json: bool
    _client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(
                self.target,
                self.token,
                tls=self.tls,
                root_certificates=self.root_cert,
                certificate_chain=self.client_cert,
                private_key=self.client_key,
                timeout=self.timeout,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """JSON of `data` with --json, else whatever `human` prints."""
        if self.as_json:
            click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))
        else:
            human()


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def explain(error: LatticeError, session: Session | None = None) -> str:
    """The error's line, with what to do next where the cause is a usual one."""
    line = str(error)
    if session is None:
        return line
    if isinstance(error, Unavailable) and _unreachable(error.message):
        return (
            f"{error.code.name}: no Lattice suite at {session.target} ({error.message}); "
            "start one with `lattice up`, or point --target / LATTICE_TARGET at yours"
        )
    if isinstance(error, Unauthenticated) and not session.token:
        return f"{line}; set LATTICE_TOKEN (see `lattice token --help`) or pass --token"
    return line


_UNREACHABLE = ("failed to connect", "connection refused", "connect failed", "dns resolution")


def _unreachable(message: str) -> bool:
    """Whether an UNAVAILABLE says nothing answered at the address at all."""
    lowered = message.lower()
    return any(
        marker in lowered
        for marker in (
            "failed to connect",
            "connection refused",
            "connect failed",
            "dns resolution",
        )
    )


def run_reporting_errors(body: Callable[[], Any], session: Session | None = None) -> Any:
    """Run `body`; turn any foreseeable failure into one line on stderr and exit 1.

    LATTICE_DEBUG=1 lets the exception through, traceback and all.
    """
    if os.environ.get("LATTICE_DEBUG", "").lower() in ("1", "true", "yes"):
        return body()
    try:
        return body()
    except BrokenPipeError:
        # `lattice ... | head`: the reader left; nothing more to say.
        sys.stderr.close()
        sys.exit(0)
    except LatticeError as exc:
        _fail(explain(exc, session))
    except grpc.RpcError as exc:
        _fail(explain(from_rpc_error(exc), session))
    except (OSError, ValueError) as exc:
        _fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


def lattice_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the connection options and error handling; pass a `session` argument."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = Session(
            target=kwargs.pop("target"),
            token=kwargs.pop("token"),
            tls=kwargs.pop("tls"),
            root_cert=kwargs.pop("tls_root_cert"),
            client_cert=kwargs.pop("tls_client_cert"),
            client_key=kwargs.pop("tls_client_key"),
            timeout=kwargs.pop("timeout"),
            as_json=kwargs.pop("as_json"),
        )
        try:
            return run_reporting_errors(lambda: function(*args, session=session, **kwargs), session)
        finally:
            session.close()

    options = [
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
        click.option(
            "--timeout", type=float, default=None, help="Deadline in seconds for each call."
        ),
        click.option(
            "--tls-client-key",
            envvar="LATTICE_TLS_CLIENT_KEY",
            default=None,
            help="PEM key for mutual TLS [LATTICE_TLS_CLIENT_KEY].",
        ),
        click.option(
            "--tls-client-cert",
            envvar="LATTICE_TLS_CLIENT_CERT",
            default=None,
            help="PEM client certificate for mutual TLS [LATTICE_TLS_CLIENT_CERT].",
        ),
        click.option(
            "--tls-root-cert",
            envvar="LATTICE_TLS_ROOT_CERT",
            default=None,
            help="PEM CA bundle to verify the server; turns TLS on [LATTICE_TLS_ROOT_CERT].",
        ),
        click.option(
            "--tls/--plaintext",
            default=None,
            help="Force TLS on (system CAs) or off [LATTICE_TLS].",
        ),
        click.option(
            "--token",
            envvar="LATTICE_TOKEN",
            default=None,
            help="Bearer token (see `lattice token`) [LATTICE_TOKEN].",
        ),
        click.option(
            "--target",
            envvar="LATTICE_TARGET",
            default=DEFAULT_TARGET,
            show_default=True,
            help="host:port of the gateway (or a service) [LATTICE_TARGET].",
        ),
    ]
    for option in options:
        wrapper = option(wrapper)
    return wrapper


def to_jsonable(data: Any) -> Any:
    """Protos, dataclasses, lists and dicts of them, as plain JSON values."""
    if isinstance(data, Message):
        return json_format.MessageToDict(
            data, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(data).items()}
    if isinstance(data, dict):
        return {str(k): to_jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [to_jsonable(v) for v in data]
    return data


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; an empty table says so."""
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        click.echo("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """`key: value` lines, keys aligned."""
    items = [(k, "" if v is None else str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        click.echo(f"{key + ':':<{width + 1}} {value}")


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A timestamp as local-free UTC text, or "-" when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    moment = stamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """KEY=VALUE options into a dict."""
    result: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        result[key] = item
    return result
