"""Tell the registry when this replica cannot load a version, and why.

ListLoadedModels shows a FAILED version to whoever asks this replica, and the
gateway routes around it; the model's owner, though, looks at the registry.
So the manager reports each change of a version's fate (failed with a reason,
loaded again after a failure) with ReportVersionLoad, which records it in the
model's deployment history.

The reason is written for the owner, not the operator: what went wrong in
plain words, with any server path cut down to its file name and no exception
class names. The full error stays in this replica's log.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Protocol

from grpc import aio

from lattice.errors import LatticeError
from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime.identity import Caller, service_caller

log = logging.getLogger(__name__)

#: Longest detail kept from an error's own text.
MAX_DETAIL = 300
#: An absolute path (POSIX or Windows) not inside a URI: `/a/b/c.bin` -> `c.bin`.
_PATH = re.compile(r"(?<![\w:/.])(?:[A-Za-z]:)?[/\\](?:[^\s'\",;()<>\[\]{}]+[/\\])*")


def scrub_paths(text: str) -> str:
    """`text` with every absolute path reduced to its last component."""
    return _PATH.sub("", text)


def failure_reason(exc: BaseException) -> str:
    """A path-free, class-free sentence saying why a load failed."""
    if isinstance(exc, LatticeError):
        return scrub_paths(exc.message)[:MAX_DETAIL]
    detail = scrub_paths(str(exc)).strip()[:MAX_DETAIL]
    if isinstance(exc, MemoryError) or "out of memory" in detail.lower():
        what = "not enough memory to load the model"
    elif isinstance(exc, FileNotFoundError):
        what = "the artifact lacks a file the model needs"
    elif isinstance(exc, OSError):
        what = "the artifact's files could not be read (corrupt or incomplete)"
    else:
        what = "the model could not be built from the artifact (corrupt or incompatible weights)"
    return f"{what}: {detail}" if detail else what


class LoadReports(Protocol):
    """Where the manager sends load outcomes (the registry, or a test's list)."""

    async def report(self, model_name: str, version: int, *, loaded: bool, reason: str) -> None:
        """Record the outcome; never raises (a report is best effort)."""


class RegistryLoadReporter:
    """Reports load outcomes to the registry as this replica (`host:port`)."""

    def __init__(
        self,
        channel: aio.Channel,
        *,
        caller: Caller | None = None,
        host: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        self._metadata = (caller or service_caller("inference")).metadata()
        self._host = host or socket.gethostname()
        self._port = 0
        self._timeout = timeout

    def serving_on(self, port: int) -> None:
        """Name this replica by the port its server bound (known only after binding)."""
        self._port = port

    @property
    def replica(self) -> str:
        return f"{self._host}:{self._port}" if self._port else self._host

    async def report(self, model_name: str, version: int, *, loaded: bool, reason: str) -> None:
        request = registry_pb2.ReportVersionLoadRequest(
            model_name=model_name,
            version=version,
            loaded=loaded,
            reason=reason[:1024],
            replica=self.replica[:260],
        )
        try:
            await self._stub.ReportVersionLoad(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except aio.AioRpcError as error:
            log.warning(
                "could not report the load of %s:%d to the registry: %s",
                model_name,
                version,
                error.details(),
            )
