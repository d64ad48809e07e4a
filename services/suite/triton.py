"""A local Triton Inference Server for development, tests and benchmarks: the CPU
`tritonserver` the nvidia-pytriton wheel ships.

What it takes to run that binary here (found by reading pytriton's own launcher,
`pytriton/triton.py` and `pytriton/server/triton_server.py`, and by trying):

- `LD_LIBRARY_PATH` = the running interpreter's `LIBDIR` (so the Python-backend stub
  embeds the SAME libpython as this venv's interpreter, not a system one) + the wheel's
  bundled `nvidia_pytriton.libs` (libtritonserver, libcudart stubs, ...).
- `PATH` starts with this venv's `bin/`: the stub derives `sys.prefix` from the `python3`
  it finds first, which is how `model.py` sees this venv's torch and transformers.
- `--backend-directory` must contain `python/triton_python_backend_stub` built for this
  Python minor version; the wheel keeps one per version under `python_backend_stubs/`,
  so we assemble a private backend directory (2.8 MB copy) per server.
- A unique `shm-region-prefix-name` so concurrent servers never share /dev/shm regions.
- No GPU: NVML/DCGM print a warning and Triton runs the CPU instances.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from services.suite.ports import free_port


class _PortTaken(Exception):
    """Another process bound one of our ports between free_port() and Triton."""


def pytriton_root() -> Path:
    """The `pytriton` package directory (found without importing pytriton itself)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: pip install -e '.[triton]'")
    return Path(next(iter(spec.submodule_search_locations)))


def tritonserver_binary() -> Path:
    return pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def prepare_backend_directory(target: Path) -> Path:
    """A backend directory with the Python backend and the stub for this interpreter."""
    dist = pytriton_root() / "tritonserver"
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(dist / "backends" / "python" / name, python_dir / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return target


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `tritonserver` and its Python-backend stubs need (see module doc)."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    parts = [libdir, str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in parts if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class TritonProcess:
    """One tritonserver on free loopback ports, serving `model_repository` on CPU."""

    def __init__(
        self,
        model_repository: Path,
        workdir: Path,
        *,
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository)
        self.workdir = Path(workdir)
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.extra_args = tuple(extra_args)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.log_path = self.workdir / "tritonserver.log"
        self.startup_seconds: float | None = None
        self.shm_prefix = f"lattice{secrets.token_hex(4)}_"
        self.server_id = f"lattice-test-{secrets.token_hex(4)}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        backends = prepare_backend_directory(self.workdir / "backends")
        args = [
            str(tritonserver_binary()),
            f"--id={self.server_id}",
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={pytriton_root() / 'tritonserver' / 'caches'}",
            f"--model-control-mode={self.model_control_mode}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        return args + list(self.extra_args)

    def start(self, timeout: float = 90.0, wait_models: Sequence[str] = ()) -> TritonProcess:
        """Start and block until the server (and `wait_models`) report ready.

        Free ports are only probably free: if another process takes one first,
        Triton exits with "already in use" and we retry on new ports.
        """
        for attempt in range(3):
            try:
                return self._start_once(timeout, wait_models)
            except _PortTaken:
                if attempt == 2:
                    raise RuntimeError(f"no free ports:\n{self.logs()[-2000:]}") from None
                self.grpc_port, self.http_port, self.metrics_port = (free_port() for _ in range(3))
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float, wait_models: Sequence[str]) -> TritonProcess:
        import tritonclient.grpc as grpcclient

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=triton_environment(),
                start_new_session=True,
            )
        client = grpcclient.InferenceServerClient(self.grpc_address)
        try:
            deadline = started + timeout
            while True:
                if self._process.poll() is not None:
                    self.kill()
                    if "already in use" in self.logs():
                        raise _PortTaken
                    raise RuntimeError(f"tritonserver exited early:\n{self.logs()[-4000:]}")
                if self._ready(client, wait_models) and self._is_ours(client):
                    break
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"tritonserver not ready in {timeout}s:\n{self.logs()[-4000:]}"
                    )
                time.sleep(0.1)
        finally:
            client.close()
        self.startup_seconds = time.monotonic() - started
        return self

    def _is_ours(self, client) -> bool:
        """The server on our port is this process (its --id), not a stranger's."""
        return client.get_server_metadata().name == self.server_id

    @staticmethod
    def _ready(client, models: Sequence[str]) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return client.is_server_ready() and all(client.is_model_ready(m) for m in models)
        except InferenceServerException:
            return False

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server and its stub processes (to simulate Triton going down)."""
        if self._process is not None:
            with suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None
        # A killed server leaves its Python-backend shared memory behind.
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful SIGINT (what Triton expects), then SIGKILL if it lingers."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout)
        self.kill()


@contextmanager
def running_triton(
    model_repository: Path, workdir: Path, *, wait_models: Sequence[str] = (), **kwargs
) -> Iterator[TritonProcess]:
    """Context manager: a started TritonProcess, stopped on exit."""
    server = TritonProcess(model_repository, workdir, **kwargs)
    server.start(wait_models=wait_models)
    try:
        yield server
    finally:
        server.stop()
