"""Why a load failed, in words an owner can read: no server path, no exception class."""

from __future__ import annotations

from services.inference.load_reports import failure_reason, scrub_paths


def test_failure_reasons_name_no_server_path_and_no_exception_class():
    missing = FileNotFoundError(2, "No such file", "/srv/data/inference/artifacts/ab12/config.json")
    reason = failure_reason(missing)
    assert reason.startswith("the artifact lacks a file the model needs")
    assert "config.json" in reason and "/srv" not in reason and "FileNotFoundError" not in reason
    assert failure_reason(MemoryError()) == "not enough memory to load the model"
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failure_reason(oom).startswith("not enough memory")
    assert scrub_paths("open C:\\models\\a\\w.bin failed") == "open w.bin failed"
    assert scrub_paths("triton://10.0.0.1:8001/gpt stays") == "triton://10.0.0.1:8001/gpt stays"
    assert scrub_paths("weights/bias shape") == "weights/bias shape"
