"""Newcomer time: from a fresh clone to the first streamed token, the way the
README's "Two commands" go (`make up`: install, start the suite, train the
starter model, serve it), then `lattice generate --stream`.

Phases, each timed on the wall clock and printed with its share of the total:
  clone        git clone of --source (default: this repository) into a temp dir
  install      `make install` in the clone: a NEW venv (python3.11), then pip
               installs torch and '.[dev]' from whatever pip's configuration
               offers (its cache, local wheelhouses, the index): printed below
  start        `lattice up --starter-model starter-gpt` (what `make up` runs after
               install) until "Lattice is up"
  data         the starter's corpus preparation
  train        the starter's DDP training job, until it is registered
  serve        until the gateway serves it ("Serving starter-gpt:N")
  first token  `lattice generate starter-gpt ... --stream` until its first output byte
               (includes the CLI's own start)

The suite runs on free loopback ports (not make up's fixed 50051-50054) so the
measurement can run beside other suites; everything else is `make up`'s path.
The goal is <= 120 s on the project's 2-core machine; the figure is absolute,
so say how loaded the machine was (the load average is printed).

    .venv/bin/python bench/newcomer.py [--source PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MARKERS = {  # a line of `lattice up` output -> the phase that ends there
    "Lattice is up": "start",
    "training ": "data",
    "Serving ": "serve",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> float:
    """Run to completion with output to `log`; seconds taken."""
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
    return time.monotonic() - started


class Suite:
    """`lattice up --starter-model` in the background; times its phases from its output."""

    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.gateway = free_port()
        ports = {name: free_port() for name in ("registry", "inference", "trainer", "redis")}
        command = [str(clone / ".venv/bin/lattice"), "up", "--starter-model", "starter-gpt"]
        command += ["--gateway-port", str(self.gateway)]
        command += [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.marks: dict[str, float] = {}
        self.lines: list[str] = []
        self.served = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            for marker, phase in MARKERS.items():
                if line.startswith(marker) and phase not in self.marks:
                    self.marks[phase] = time.monotonic()
            if line.startswith("job ") and " succeeded" in line:
                self.marks.setdefault("train", time.monotonic())
            if "serve" in self.marks:
                self.served.set()
        self.served.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def first_token(clone: Path, env: dict[str, str], gateway: int) -> tuple[float, str]:
    """Seconds from launching `lattice generate --stream` to its first output byte."""
    lattice = str(clone / ".venv/bin/lattice")
    token = subprocess.run(
        [lattice, "token"], cwd=clone, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    started = time.monotonic()
    process = subprocess.Popen(
        [lattice, "generate", "starter-gpt", "Return the", "--stream", "--max-new-tokens", "16"],
        cwd=clone,
        env={**env, "LATTICE_TOKEN": token, "LATTICE_TARGET": f"127.0.0.1:{gateway}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    first = process.stdout.read(1)
    elapsed = time.monotonic() - started
    rest, errors = process.communicate(timeout=60)
    if process.returncode != 0 or not first:
        raise RuntimeError(f"generate failed: {errors.decode()}")
    return elapsed, (first + rest).decode(errors="replace").strip()


def main(source: Path, keep: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="lattice-newcomer-"))
    clone = root / "lattice"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATTICE_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"  # phase lines arrive as they are printed
    load_before = os.getloadavg()
    phases: dict[str, float] = {}
    suite = None
    try:
        t0 = time.monotonic()
        phases["clone"] = run(
            ["git", "clone", "--quiet", str(source), str(clone)], root, root / "clone.log"
        )
        phases["install"] = run(["make", "install"], clone, root / "install.log", env)
        suite = Suite(clone, env)
        if not suite.served.wait(timeout=900) or "serve" not in suite.marks:
            raise RuntimeError(
                "the starter model was never served:\n" + "\n".join(suite.lines[-20:])
            )
        marks = suite.marks
        phases["start"] = marks["start"] - suite.started
        phases["data"] = marks.get("data", marks["start"]) - marks["start"]
        phases["train"] = marks.get("train", marks["serve"]) - marks.get("data", marks["start"])
        phases["serve"] = marks["serve"] - marks.get("train", marks["serve"])
        phases["first token"], text = first_token(clone, env, suite.gateway)
        total = time.monotonic() - t0
    finally:
        if suite is not None:
            suite.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    installed = (root / "install.log") if keep else None
    print(f"newcomer time from {source}: {total:.1f} s (goal <= 120 s)")
    for name, seconds in phases.items():
        print(f"  {name:<12} {seconds:7.1f} s  {seconds / total:6.1%}")
    print(f"  first streamed text: {text[:60]!r}")
    print(f"load average before: {load_before[0]:.1f} (1 min), after: {os.getloadavg()[0]:.1f}")
    if installed:
        print(f"logs kept in {root}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--keep", action="store_true", help="Keep the clone and its logs.")
    args = parser.parse_args()
    main(args.source, args.keep)
