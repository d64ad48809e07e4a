"""The worker's host allocator policy, in fresh processes (it is process-wide)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from services.trainer.server import TrainerSettings, build_server
from services.trainer.worker import allocator

ROOT = Path(__file__).resolve().parents[2]

#: Allocate, touch and free a 48 MiB buffer 20 times (a training step's logits, say;
#: above the 32 MiB glibc's adaptive mmap threshold can reach): minor page faults
#: per round after the first.
PROBE = """
import ctypes, json, resource, sys
from services.trainer.worker import allocator
in_effect = allocator.apply(sys.argv[1])
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 48 << 20
def round_():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"in_effect": in_effect, "faults": (after - before) / 20}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_retain_reuses_freed_blocks_instead_of_faulting_them_in_again():
    system, retain = probe(allocator.SYSTEM), probe(allocator.RETAIN)
    assert (system["in_effect"], retain["in_effect"]) == ("system", "retain")
    # glibc's default maps such a block afresh each time: ~12,000 zero-filled pages.
    assert system["faults"] > 5000
    assert retain["faults"] < 50


async def test_unknown_policy_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="retain, system"):
        allocator.apply("jemalloc")
    with pytest.raises(ValueError, match="worker_allocator"):
        await build_server(
            TrainerSettings(port=0, data_dir=tmp_path, log_json=False, worker_allocator="huge")
        )
