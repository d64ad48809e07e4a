"""`lattice train`: submit a training job and, by default, watch it live."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lattice import _requests
from lattice.cli._common import Session, lattice_command
from lattice.cli.progress import JobProgress, finish
from lattice.v1 import trainer_pb2

FAMILIES = {
    "gpt2": trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
    "bert": trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM,
}
STRATEGIES = {
    "ddp": trainer_pb2.DISTRIBUTED_STRATEGY_DDP,
    "fsdp": trainer_pb2.DISTRIBUTED_STRATEGY_FSDP,
}


def build_spec(options: dict) -> trainer_pb2.JobSpec:
    """A JobSpec from --spec (JSON file) overlaid with the flags that were given."""
    spec = trainer_pb2.JobSpec()
    if options["spec_file"] is not None:
        spec = _requests.job_spec(json.loads(Path(options["spec_file"]).read_text()))
    if options["family"]:
        spec.family = FAMILIES[options["family"]]
    if options["dataset"]:
        spec.dataset_id = options["dataset"]
    if options["base_model"]:
        spec.base_model = options["base_model"]
    if options["display_name"]:
        spec.display_name = options["display_name"]
    arch = spec.architecture
    for flag, field in (
        ("layers", "num_layers"),
        ("heads", "num_heads"),
        ("hidden_size", "hidden_size"),
        ("max_positions", "max_positions"),
    ):
        if options[flag] is not None:
            setattr(arch, field, options[flag])
    hyper = spec.hyperparameters
    for flag, field in (
        ("steps", "max_steps"),
        ("epochs", "epochs"),
        ("learning_rate", "learning_rate"),
        ("batch_size", "batch_size"),
        ("sequence_length", "sequence_length"),
        ("seed", "seed"),
    ):
        if options[flag] is not None:
            setattr(hyper, field, options[flag])
    if options["processes"] is not None:
        spec.distributed.processes_per_node = options["processes"]
    if options["strategy"]:
        spec.distributed.strategy = STRATEGIES[options["strategy"]]
    if options["eval_interval"] is not None:
        spec.eval_interval_steps = options["eval_interval"]
    if options["checkpoint_interval"] is not None:
        spec.checkpoint_interval_steps = options["checkpoint_interval"]
    if options["model"]:
        spec.registration.model_name = options["model"]
    if options["canary_weight"] is not None:
        spec.registration.canary_weight = options["canary_weight"]
    if options["alias"]:
        spec.registration.alias = options["alias"]
    return spec


@click.command()
@click.option("--dataset", default="", help="Prepared dataset id (see `lattice data prepare`).")
@click.option("--model", default="", help="Registry model to add the trained version to.")
@click.option(
    "--family",
    type=click.Choice(tuple(FAMILIES)),
    default=None,
    help="gpt2 (causal LM) or bert (masked LM). Default: gpt2.",
)
@click.option("--base-model", default="", help="Fine-tune this version (name:N or name@alias).")
@click.option("--layers", type=click.IntRange(min=1), default=None)
@click.option("--heads", type=click.IntRange(min=1), default=None)
@click.option("--hidden-size", type=click.IntRange(min=1), default=None)
@click.option("--max-positions", type=click.IntRange(min=1), default=None)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimiser steps.")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--learning-rate", "--lr", type=click.FloatRange(0, 1, min_open=True), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Per process.")
@click.option("--sequence-length", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="torchrun processes per node (2 = DDP on two CPU processes).",
)
@click.option("--strategy", type=click.Choice(tuple(STRATEGIES)), default=None)
@click.option("--eval-interval", type=click.IntRange(min=0), default=None)
@click.option("--checkpoint-interval", type=click.IntRange(min=0), default=None)
@click.option(
    "--canary-weight",
    type=click.IntRange(0, 100),
    default=None,
    help="Put the new version online with this traffic weight.",
)
@click.option("--alias", default="", help="Point this alias at the new version.")
@click.option("--display-name", default="")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A JobSpec as JSON; flags override its fields.",
)
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Follow the job with a live progress bar until it finishes.",
)
@click.option("--logs", is_flag=True, help="Also print the job's log lines while watching.")
@lattice_command
def train(session: Session, watch: bool, logs: bool, **options) -> None:
    """Submit a training job; by default watch it (loss, tokens/s, alerts) to the end.

    \b
    lattice train --dataset docs-0123abcd --model tiny-gpt --steps 200 --processes 2
    Exit status: 0 when the job succeeded (or was submitted, with --no-watch),
    1 when it failed or was cancelled. Ctrl-C stops watching, not the job
    (`lattice jobs watch ID` picks it up again). With --json, every event is
    one JSON line on stdout.
    """
    spec = build_spec(options)
    if spec.family == trainer_pb2.MODEL_FAMILY_UNSPECIFIED:
        spec.family = FAMILIES["gpt2"]
    client = session.client()
    job = client.submit_job(spec)
    if not watch:
        session.emit(job, lambda: click.echo(job.id))
        return
    if not session.as_json:
        click.echo(f"submitted job {job.id}", err=True)
    with client.watch_job(job.id) as events:
        final = JobProgress(session.as_json, show_logs=logs).follow(events)
    finish(final or client.get_job(job.id), session.as_json)
