"""The shared runtime of the Lattice services: server bootstrap, settings,
telemetry, the per-RPC wrapper, client channels. Services depend on this; it depends
only on the generated stubs and the `lattice` error tree."""

from lattice.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LatticeError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.runtime.channels import create_channel
from services.runtime.server import LatticeServer, Service, run_until_signalled
from services.runtime.settings import ServerSettings, load_settings

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LatticeError",
    "LatticeServer",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerSettings",
    "Service",
    "Unauthenticated",
    "Unavailable",
    "create_channel",
    "load_settings",
    "run_until_signalled",
]
