"""Run a multi-node job's torchrun agents side by side on this host.

`python -m services.trainer.jobs.local_nodes --nodes N --port P -- <torchrun args>`
starts N torchrun agents (`--nnodes N --node-rank i`) that meet through c10d
rendezvous on 127.0.0.1:P, exactly as agents on N machines meet on a shared
endpoint, and exits with the first non-zero exit status (or 0). The runner
treats this process like a single torchrun: its session holds every agent, so
stopping the job stops them all. On a cluster, the agents run one per pod
(Kubeflow PyTorchJob, `services.trainer.jobs.pytorchjob`) instead.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from services.trainer.jobs.rendezvous import LAUNCHER, c10d_args


def agent_argv(
    python: str, nodes: int, rank: int, port: int, job_id: str, rest: list[str]
) -> list[str]:
    return [
        python,
        "-m",
        LAUNCHER,
        "--node-rank",
        str(rank),
        *c10d_args(nodes, f"127.0.0.1:{port}", job_id),
        *rest,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    agents = [
        subprocess.Popen(agent_argv(sys.executable, args.nodes, i, args.port, args.job_id, rest))
        for i in range(args.nodes)
    ]

    def forward(signum: int, _frame: object) -> None:
        for agent in agents:
            agent.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    codes: list[int | None] = [None] * len(agents)
    while any(c is None for c in codes):
        codes = [a.poll() for a in agents]
        if any(c not in (None, 0) for c in codes):  # one node failed: the job failed
            forward(signal.SIGTERM, None)
            for agent in agents:
                agent.wait()
            break
        time.sleep(0.2)
    return next((a.returncode for a in agents if a.returncode), 0)


if __name__ == "__main__":
    sys.exit(main())
