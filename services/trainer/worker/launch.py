"""torchrun for training jobs, with every rank forked from an agent that has
already imported the training program.

`python -m services.trainer.worker.launch [torchrun options] -m MODULE [ARGS...]`
takes exactly torchrun's options and runs torchrun's own elastic agent
(`torch.distributed.run.run`). The one difference: torchrun starts each rank
as a fresh interpreter that imports torch, transformers and the training
program again, about 4 s of CPU per rank on a 2-core host
(`python -X importtime -c "import services.trainer.worker.train"`), and again
for every restarted rank. Here the agent imports them once and forks the
ranks (torch's "fork" start method, through its `--run-path` entry point), so
a rank starts in milliseconds and shares those pages with its siblings.

The agent only imports: it never initialises CUDA or a process group, and
runs no torch operation, so a forked rank starts as clean as a spawned one.
A forked rank also ends without interpreter teardown (multiprocessing exits
it with `os._exit` once the program returns), which gloo's background
threads need: tearing them down can abort() a finished job.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.run import parse_args, run

from services.trainer.worker import dispatch
from services.trainer.worker.config import CONFIG_FILE, WorkerConfig


def module_file(module: str) -> str:
    """The file `python -m module` runs (a package's `__main__`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"no module named {module}")
    if spec.submodule_search_locations is not None:  # a package
        return module_file(f"{module}.__main__")
    return spec.origin


def preload(module: str, program_args: list[str]) -> None:
    """Import what the ranks will run: the module itself (a package's
    `__init__`, or a module whose `__main__` block is guarded), and the
    training program its job runs, found as the worker's dispatch finds it."""
    if not module.endswith("__main__"):
        importlib.import_module(module)
    job_dir = dispatch.job_dir(program_args)
    if job_dir is not None and (job_dir / CONFIG_FILE).is_file():
        importlib.import_module(dispatch.program(WorkerConfig.load(job_dir)))


def apply_thread_count() -> None:
    """torchrun sets OMP_NUM_THREADS=1 when a node runs several ranks, but
    OpenMP read its environment when this agent imported torch: each forked
    rank applies it itself, or two ranks of two threads each would
    oversubscribe a two-core host."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


@record
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.module:
        raise SystemExit("launch runs a module: -m MODULE")
    preload(args.training_script, list(args.training_script_args))
    # Ranks inherit these stream objects, not a fresh interpreter's `-u`.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.register_at_fork(after_in_child=apply_thread_count)
    args.training_script = module_file(args.training_script)
    args.run_path = True
    args.start_method = "fork"
    run(args)


if __name__ == "__main__":
    main()
