"""Print the PyTorchJob the trainer would submit for one job attempt, as YAML.

The trainer renders and submits these itself (setting `launcher=pytorchjob`,
module `services.trainer.jobs.pytorchjob`); this is the same render for
review, for the deploy checks, and for operators who apply by hand:

    python -m deploy.render_pytorchjob --job-id j1 --job-dir /var/lib/lattice/trainer/jobs/j1 \
        --image registry.example.com/lattice/trainer:0.1.0 --nodes 2 | kubectl apply -f -

The job directory must already hold the job's job.json (the trainer writes it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from services.trainer.jobs.pytorchjob import ClusterJob, ClusterPolicy, render


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--namespace", default="lattice")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--procs-per-node", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--cpu", default="4")
    parser.add_argument("--memory", default="16Gi")
    parser.add_argument("--data-claim", default="training-data")
    parser.add_argument("--data-mount", default="/var/lib/lattice")
    args = parser.parse_args(argv)
    job = ClusterJob(
        job_id=args.job_id,
        job_dir=args.job_dir,
        attempt=args.attempt,
        nodes=args.nodes,
        processes_per_node=args.procs_per_node,
        gpus_per_node=args.gpus_per_node,
    )
    policy = ClusterPolicy(
        image=args.image,
        namespace=args.namespace,
        cpu=args.cpu,
        memory=args.memory,
        data_claim=args.data_claim,
        data_mount=args.data_mount,
    )
    try:
        sys.stdout.write(yaml.safe_dump(render(job, policy), sort_keys=False))
    except ValueError as exc:
        print(f"render_pytorchjob: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
