"""Lattice client SDK: governed LLM services over gRPC.

    import lattice

    with lattice.Client() as client:          # $LATTICE_TARGET, $LATTICE_TOKEN
        print(client.generate("tiny-gpt", "Hello").text)
        for delta in client.stream("tiny-gpt", "Once upon"):
            print(delta.text, end="", flush=True)

Everything not exported here is private. The generated messages live in
`lattice.v1`.
"""

from lattice._async_client import AsyncClient
from lattice._client import Client
from lattice._streams import AsyncStream, Stream
from lattice._types import (
    Classifications,
    Embeddings,
    Generation,
    GenerationDelta,
    SimilarWords,
    Usage,
)
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
    Unimplemented,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncStream",
    "Cancelled",
    "Classifications",
    "Client",
    "DeadlineExceeded",
    "Embeddings",
    "FailedPrecondition",
    "Generation",
    "GenerationDelta",
    "Internal",
    "InvalidArgument",
    "LatticeError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SimilarWords",
    "Stream",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Usage",
]
