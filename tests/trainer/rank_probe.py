"""A rank that reports how it was started (run by tests/trainer/test_launch.py
through the launcher): its parent, its thread count, and whether this module
was already imported when the rank began, i.e. preloaded by the agent."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    report = {
        "rank": int(os.environ["RANK"]),
        "parent": os.getppid(),
        "threads": torch.get_num_threads(),
        "preloaded": "tests.trainer.rank_probe" in sys.modules,
    }
    (out / f"rank-{report['rank']}.json").write_text(json.dumps(report))
