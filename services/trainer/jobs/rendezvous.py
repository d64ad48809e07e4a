"""The agent every launcher runs, and torchrun's c10d rendezvous arguments
shared by both multi-node launchers.

The local launcher (`local_nodes`) starts every agent on this host against a
loopback endpoint; the PyTorchJob launcher (`pytorchjob`) gives each pod the
same arguments with the Master pod's address. Only the standard library here:
`deploy/render_pytorchjob.py` runs in the deploy checks' tools venv.
"""

from __future__ import annotations

#: The module every job agent runs: torchrun's options, with its ranks forked
#: from an agent that already imported the training program
#: (`services/trainer/worker/launch.py`).
LAUNCHER = "services.trainer.worker.launch"


def c10d_args(nodes: int, endpoint: str, rendezvous_id: str) -> list[str]:
    """Agents meet at `endpoint` (host:port) under `rendezvous_id`; the first to
    arrive on the endpoint's host serves the store."""
    return [
        "--nnodes",
        str(nodes),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        rendezvous_id,
    ]
