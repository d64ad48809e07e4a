"""`lattice jobs`: list, show, cancel, watch, plot and export training jobs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from lattice.cli import job_series
from lattice.cli._common import Session, lattice_command, print_fields, print_table, when
from lattice.cli.progress import JobProgress, alert_text, finish, metrics_text, state_name
from lattice.v1 import trainer_pb2

STATES = tuple(
    name.removeprefix("JOB_STATE_").lower()
    for name, _ in trainer_pb2.JobState.items()
    if name != "JOB_STATE_UNSPECIFIED"
)


@click.group()
def jobs() -> None:
    """Training jobs."""


@jobs.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Only jobs in this state (repeatable).",
)
@lattice_command
def list_jobs(session: Session, states: tuple[str, ...]) -> None:
    """List jobs, newest first."""
    found = session.client().list_jobs(states)
    session.emit(
        found,
        lambda: print_table(
            ["id", "state", "step", "loss", "model", "created"],
            [
                (
                    j.id,
                    state_name(j.state),
                    j.latest_metrics.step or "-",
                    f"{j.latest_metrics.loss:.4f}" if j.latest_metrics.step else "-",
                    f"{j.registered_model}:{j.registered_version}"
                    if j.registered_model
                    else j.spec.registration.model_name or "-",
                    when(j.create_time),
                )
                for j in found
            ],
        ),
    )


@jobs.command("show")
@click.argument("job_id")
@lattice_command
def show_job(session: Session, job_id: str) -> None:
    """Show one job: state, latest metrics, alerts."""
    job = session.client().get_job(job_id)
    registered = f"{job.registered_model}:{job.registered_version}" if job.registered_model else "-"
    session.emit(
        job,
        lambda: print_fields(
            [
                ("job", job.id),
                ("state", state_name(job.state)),
                ("dataset", job.spec.dataset_id),
                ("created", when(job.create_time)),
                ("started", when(job.start_time)),
                ("ended", when(job.end_time)),
                ("attempts", job.attempts),
                ("metrics", metrics_text(job.latest_metrics) if job.latest_metrics.step else "-"),
                ("checkpoint step", job.checkpoint_step or "-"),
                ("registered", registered),
                ("error", job.error or "-"),
                *(("alert", alert_text(a)) for a in job.alerts),
            ]
        ),
    )


@jobs.command("cancel")
@click.argument("job_id")
@lattice_command
def cancel_job(session: Session, job_id: str) -> None:
    """Stop a job's process group (no-op for a finished job)."""
    job = session.client().cancel_job(job_id)
    session.emit(job, lambda: click.echo(f"job {job.id}: {state_name(job.state)}"))


@jobs.command("watch")
@click.argument("job_id")
@click.option(
    "--from-sequence",
    type=click.IntRange(min=0),
    default=0,
    help="Resume after this event sequence number.",
)
@click.option("--logs", is_flag=True, help="Also print the job's log lines.")
@lattice_command
def watch_job(session: Session, job_id: str, from_sequence: int, logs: bool) -> None:
    """Follow a job until it finishes; exit 1 if it failed or was cancelled.

    A trainer restart does not end it: it reconnects and resumes after the last event."""
    client = session.client()
    events = client.follow_job(job_id, from_sequence)
    final = JobProgress(session.as_json, show_logs=logs).follow(events)
    finish(final or client.get_job(job_id), session.as_json)


def _series(session: Session, job_id: str) -> job_series.Series:
    with session.client().watch_job(job_id) as events:
        return job_series.collect(events)


@jobs.command("metrics")
@click.argument("job_id")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV (the default and only format).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@lattice_command
def job_metrics(session: Session, job_id: str, as_csv: bool, output: Path | None) -> None:
    """Export a job's metric series (step, loss, validation loss, lr, gradient norm)."""
    series = _series(session, job_id)
    if output is None:
        job_series.write_csv(series, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        job_series.write_csv(series, handle)
    click.echo(str(output))


@jobs.command("plot")
@click.argument("job_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG to write (default: JOB_ID.png).",
)
@lattice_command
def plot_job(session: Session, job_id: str, output: Path | None) -> None:
    """Draw loss, validation loss, learning rate and gradient norm, alerts marked."""
    try:  # matplotlib comes with the ml extra; the rest of the CLI works without it
        plotting = importlib.import_module("lattice.cli.job_plot")
    except ImportError:
        raise ValueError(
            "lattice jobs plot needs matplotlib: pip install 'lattice-llm[ml]'"
        ) from None
    series = _series(session, job_id)
    if not series.rows:
        raise ValueError(f"job {job_id} has no metrics yet")
    path = plotting.plot(series, output or Path(f"{job_id}.png"), f"job {job_id}")
    click.echo(str(path))
