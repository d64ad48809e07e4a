"""A serving process for one causal LM with its decode process, for tests that
kill it: `python -m tests.support.decode_host MODEL_DIR` prints the decode
process's pid, then waits."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.inference.backends import LoadSpec, Task
from services.inference.decode_process import DecodeProcess
from services.inference.transformers_backend import TransformersBackend


async def _serve(model_dir: Path) -> None:
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dir), decode_process=True
    )
    await backend.load()
    assert isinstance(backend.scheduler, DecodeProcess)
    print(backend.scheduler.pid, flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
