"""Progress on a terminal: a training job's events (a bar with loss, tokens/s,
alerts) and artifact transfers (uploads, downloads, Triton exports).

On a terminal the bars redraw in place on stderr; otherwise (CI, pipes) a job
prints each metrics event as one line and a transfer prints nothing, so
scripts and --json output stay clean. With --json every job event is one JSON
line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lattice.cli._common import to_jsonable
from lattice.v1 import trainer_pb2

BAR_WIDTH = 28
#: Corpora at least this large (bytes) show `preparing`'s indicator.
LARGE_CORPUS_BYTES = 16 * 1024 * 1024
#: What `transfer` yields: progress(bytes_done, bytes_total).
OnBytes = Callable[[int, int], None]


@contextlib.contextmanager
def transfer(label: str, out: TextIO | None = None) -> Iterator[OnBytes]:
    """A bytes bar for `label` ("upload", "download", "export"): yields the
    callback the SDK calls as progress(bytes_done, bytes_total). Draws only when
    `out` (stderr by default) is a terminal, and clears itself when done."""
    out = out or sys.stderr
    if not out.isatty():
        yield _ignore
        return
    console = Console(file=out, force_terminal=True)
    columns = (
        TextColumn(f"{label:<8}"),
        BarColumn(bar_width=BAR_WIDTH),
        TextColumn("{task.percentage:>4.0f}%"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bars:
        task = bars.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bars.update(task, completed=done, total=total or None)

        yield update


def _ignore(done: int, total: int) -> None:
    """No terminal, no bar."""


@contextlib.contextmanager
def preparing(size: int, out: TextIO | None = None) -> Iterator[None]:
    """While a corpus of `size` bytes is prepared: a spinner, a pulsing bar and the
    elapsed time on `out` (stderr) when it is a terminal and the corpus is large.
    PrepareDataset is one unary call, so there is no fraction done to show."""
    out = out or sys.stderr
    if size < LARGE_CORPUS_BYTES or not out.isatty():
        yield
        return
    console = Console(file=out, force_terminal=True)
    columns = (
        SpinnerColumn(),
        TextColumn(f"preparing {size / 1e6:,.0f} MB (cleaning, dedupe, tokenizer)"),
        BarColumn(bar_width=BAR_WIDTH),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bars:
        bars.add_task("preparing", total=None)
        yield


def state_name(state: int) -> str:
    return trainer_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def alert_text(alert: trainer_pb2.TrainingAlert) -> str:
    kind = trainer_pb2.AlertKind.Name(alert.kind).removeprefix("ALERT_KIND_").lower()
    action = trainer_pb2.AlertAction.Name(alert.action).removeprefix("ALERT_ACTION_").lower()
    return f"alert {kind} at step {alert.step}: {alert.message} ({action})"


def metrics_text(m: trainer_pb2.TrainingMetrics) -> str:
    parts = [f"step {m.step}/{m.total_steps or '?'}", f"loss {m.loss:.4f}"]
    if m.HasField("validation_loss"):
        parts.append(f"val {m.validation_loss:.4f}")
    if m.tokens_per_second:
        parts.append(f"{m.tokens_per_second:,.0f} tok/s")
    return "  ".join(parts)


class JobProgress:
    """Renders events as they arrive; remembers the last job state it saw."""

    def __init__(
        self, as_json: bool = False, out: TextIO | None = None, show_logs: bool = False
    ) -> None:
        self.as_json = as_json
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.show_logs = show_logs
        self.job: trainer_pb2.Job | None = None
        self._bar_open = False

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False
        click.echo(text, file=self.out)

    def _bar(self, m: trainer_pb2.TrainingMetrics) -> None:
        if not self.tty:
            click.echo(metrics_text(m), file=self.out)
            return
        done = min(1.0, m.step / m.total_steps) if m.total_steps else 0.0
        filled = int(done * BAR_WIDTH)
        bar = "█" * filled + "·" * (BAR_WIDTH - filled)
        self.out.write(f"\r{bar} {done:4.0%}  {metrics_text(m)}\x1b[K")
        self.out.flush()
        self._bar_open = True

    def handle(self, event: trainer_pb2.WatchJobResponse) -> None:
        if self.as_json:
            click.echo(json.dumps(to_jsonable(event)))
        kind = event.WhichOneof("event")
        if kind == "job":
            self.job = event.job
        if self.as_json:
            return
        if kind == "job":
            self._line(f"job {event.job.id}: {state_name(event.job.state)}")
        elif kind == "metrics":
            self._bar(event.metrics)
        elif kind == "alert":
            self._line(alert_text(event.alert))
        elif kind == "log" and self.show_logs:
            self._line(event.log)

    def follow(self, events: Iterable[trainer_pb2.WatchJobResponse]) -> trainer_pb2.Job | None:
        for event in events:
            self.handle(event)
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False
        return self.job


def finish(job: trainer_pb2.Job | None, as_json: bool) -> None:
    """Summarise the finished job; a failed or cancelled job is a failed command."""
    if job is None:
        return
    if job.state == trainer_pb2.JOB_STATE_SUCCEEDED:
        if not as_json:
            registered = (
                f"; registered {job.registered_model}:{job.registered_version}"
                if job.registered_model
                else ""
            )
            click.echo(f"job {job.id} succeeded{registered}")
        return
    if job.state in (
        trainer_pb2.JOB_STATE_FAILED,
        trainer_pb2.JOB_STATE_CANCELLED,
        trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
    ):
        detail = f": {job.error}" if job.error else ""
        raise ValueError(f"job {job.id} {state_name(job.state)}{detail}")
