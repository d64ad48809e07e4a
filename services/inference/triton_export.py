"""Export a Hugging Face artifact as a Triton model repository.

The repository is what a GPU Triton serves in production and what the tests
serve with the CPU `tritonserver` from nvidia-pytriton:

    <repo_dir>/<model_name>/config.pbtxt      Python backend, KServe v2 tensors
    <repo_dir>/<model_name>/<version>/model.py   runs the artifact with transformers
    <repo_dir>/<model_name>/<version>/hf/        the `save_pretrained` artifact itself

Generation models are exported decoupled by default (one response per token,
then a FINAL response with finish reason and counts); `decoupled=False` gives a
unary model answered with one response. Embedding models are unary with Triton's
dynamic batching. No torch needed here: the CLI calls this without the model stack.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lattice.errors import AlreadyExists, InvalidArgument

TEMPLATES = Path(__file__).parent / "triton_repo_template"
GENERATE, EMBED = "generate", "embed"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}

#: (name, Triton type, dims, optional) -- the wire contract TritonBackend speaks.
TensorIn = tuple[str, str, str, bool]
#: (name, Triton type, dims)
TensorOut = tuple[str, str, str]

GENERATE_INPUTS: tuple[TensorIn, ...] = (
    ("PROMPT", "TYPE_STRING", "1", False),
    ("MAX_NEW_TOKENS", "TYPE_INT32", "1", True),
    ("TEMPERATURE", "TYPE_FP32", "1", True),
    ("TOP_P", "TYPE_FP32", "1", True),
    ("TOP_K", "TYPE_INT32", "1", True),
    ("SEED", "TYPE_UINT64", "1", True),
    ("STOP", "TYPE_STRING", "-1", True),
)
GENERATE_OUTPUTS: tuple[TensorOut, ...] = (
    ("TEXT", "TYPE_STRING", "1"),
    ("TOKEN_IDS", "TYPE_INT64", "-1"),
    ("FINISH_REASON", "TYPE_STRING", "1"),
    ("PROMPT_TOKENS", "TYPE_INT32", "1"),
    ("COMPLETION_TOKENS", "TYPE_INT32", "1"),
)
# Batched: each request is [rows, 1]; the dynamic batcher groups requests.
EMBED_INPUTS: tuple[TensorIn, ...] = (
    ("TEXT", "TYPE_STRING", "1", False),
    ("NORMALIZE", "TYPE_BOOL", "1", True),
)
EMBED_OUTPUTS: tuple[TensorOut, ...] = (
    ("EMBEDDING", "TYPE_FP32", "-1"),
    ("TOKEN_COUNT", "TYPE_INT32", "1"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ExportOptions:
    """Knobs of the exported model; the defaults suit a CPU test and a single GPU."""

    task: str | None = None  # "generate" | "embed"; None: from the artifact's config.json
    decoupled: bool = True  # generation only: stream token by token
    version: int = 1
    instance_count: int = 1
    device: str = "auto"  # "auto" | "cpu" | "gpu"  (Triton instance_group kind)
    dtype: str = ""  # torch dtype name, e.g. "float16" on GPU; "" = float32
    max_concurrency: int = 4  # concurrent streams per decoupled instance (threads)
    torch_threads: int = 0  # torch intra-op threads per instance; 0 = torch's default
    max_batch_size: int = 32  # embedding rows per Triton batch
    max_queue_delay_us: int = 1000  # embedding dynamic-batching wait
    default_max_new_tokens: int = 64
    artifact_digest: str = ""  # recorded in config.pbtxt for provenance
    # A conda-pack'ed Python env with torch + transformers for the stub, e.g.
    # "$$TRITON_MODEL_DIRECTORY/env.tar.gz"; "" = the Python the Triton image has.
    execution_env: str = ""
    overwrite: bool = False


def detect_task(hf_model_dir: Path) -> str:
    """generate for causal-LM architectures, embed for encoders."""
    try:
        config = json.loads((hf_model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument("hf_model_dir", f"no readable config.json in {hf_model_dir}") from exc
    architectures = config.get("architectures") or []
    if any(a.endswith(("LMHeadModel", "ForCausalLM")) for a in architectures):
        return GENERATE
    return EMBED


def export_triton_repository(
    hf_model_dir: str | Path,
    repo_dir: str | Path,
    model_name: str,
    options: ExportOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **overrides,
) -> Path:
    """Write `<repo_dir>/<model_name>/` for the artifact in `hf_model_dir`; returns it.

    Keyword `overrides` set `ExportOptions` fields directly
    (`export_triton_repository(src, repo, "m", decoupled=False)`).
    `progress(bytes_copied, bytes_total)` follows the copy of the weights, the
    step that takes the time.
    """
    opts = dataclasses.replace(options or ExportOptions(), **overrides)
    source, repo = Path(hf_model_dir), Path(repo_dir)
    _validate(source, model_name, opts)
    task = opts.task or detect_task(source)
    target = repo / model_name
    if target.exists() and not opts.overwrite:
        raise AlreadyExists(f"{target} exists; ask for an overwrite to replace it")
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.", dir=repo))
    try:
        version_dir = staging / str(opts.version)
        shutil.copytree(source, version_dir / "hf", copy_function=_counting_copy(source, progress))
        template = "generate.py" if task == GENERATE else "embed.py"
        shutil.copy2(TEMPLATES / template, version_dir / "model.py")
        (staging / "config.pbtxt").write_text(render_config(model_name, task, opts))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _counting_copy(source: Path, progress: Callable[[int, int], None] | None):
    """shutil.copy2, telling `progress` the bytes copied so far out of the tree's total."""
    if progress is None:
        return shutil.copy2
    total = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    copied = 0

    def copy(src: str, dst: str) -> object:
        nonlocal copied
        result = shutil.copy2(src, dst)
        copied += os.path.getsize(src)
        progress(copied, total)
        return result

    return copy


def _validate(source: Path, model_name: str, opts: ExportOptions) -> None:
    if not _NAME.match(model_name or ""):
        raise InvalidArgument(
            "model_name", f"{model_name!r} must match {_NAME.pattern} (it becomes a directory)"
        )
    if not source.is_dir():
        raise InvalidArgument("hf_model_dir", f"{source} is not a directory")
    if opts.task not in (None, GENERATE, EMBED):
        raise InvalidArgument("task", f"must be {GENERATE!r} or {EMBED!r}, got {opts.task!r}")
    if opts.device not in _KINDS:
        raise InvalidArgument("device", f"must be one of {sorted(_KINDS)}, got {opts.device!r}")
    for field in ("version", "instance_count", "max_concurrency", "max_batch_size"):
        if getattr(opts, field) < 1:
            raise InvalidArgument(field, "must be >= 1")


def render_config(model_name: str, task: str, opts: ExportOptions) -> str:
    """config.pbtxt text for one exported model."""
    params = {"hf_model_dir": "hf", "dtype": opts.dtype, "lattice_task": task}
    if opts.torch_threads:
        params["torch_threads"] = str(opts.torch_threads)
    if opts.execution_env:
        params["EXECUTION_ENV_PATH"] = opts.execution_env
    if opts.artifact_digest:
        params["artifact_digest"] = opts.artifact_digest
    lines = [f'name: "{model_name}"', 'backend: "python"']
    if task == GENERATE:
        lines.append("max_batch_size: 0")
        lines.append(f"model_transaction_policy {{ decoupled: {str(opts.decoupled).lower()} }}")
        params["max_concurrency"] = str(opts.max_concurrency)
        params["default_max_new_tokens"] = str(opts.default_max_new_tokens)
        inputs, outputs = GENERATE_INPUTS, GENERATE_OUTPUTS
    else:
        lines.append(f"max_batch_size: {opts.max_batch_size}")
        lines.append(
            f"dynamic_batching {{ max_queue_delay_microseconds: {opts.max_queue_delay_us} }}"
        )
        inputs, outputs = EMBED_INPUTS, EMBED_OUTPUTS
    lines.append("input [")
    lines.append(
        ",\n".join(
            f'  {{ name: "{n}" data_type: {t} dims: [ {d} ]'
            + (" optional: true" if optional else "")
            + " }"
            for n, t, d, optional in inputs
        )
    )
    lines.append("]")
    lines.append("output [")
    lines.append(
        ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in outputs)
    )
    lines.append("]")
    lines.append(
        f"instance_group [ {{ kind: {_KINDS[opts.device]} count: {opts.instance_count} }} ]"
    )
    lines.append(f"version_policy {{ specific {{ versions: [ {opts.version} ] }} }}")
    for key, value in params.items():
        lines.append(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"
