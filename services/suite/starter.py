"""The starter model: a small GPT-2 trained on the standard library's docstrings.

`lattice demo` trains one every run; `lattice up --starter-model NAME` trains
one only when NAME has nothing online, so a fresh machine serves a real model
after one command and later starts are instant.
"""

from __future__ import annotations

import dataclasses
import time

import click

from lattice import Client
from lattice.cli.progress import JobProgress
from lattice.errors import FailedPrecondition, NotFound, Unavailable
from lattice.tokens import SYSTEM_TENANT, mint_dev_token
from lattice.v1 import trainer_pb2

#: Docstrings need no markup stripping, but do repeat themselves across modules.
STARTER_CLEANING = {
    "normalize_unicode": True,
    "normalize_whitespace": True,
    "deduplicate": True,
    "min_chars": 20,
}


@dataclasses.dataclass(frozen=True)
class StarterRecipe:
    """A model that trains in about a minute on two CPU cores and still writes Python-ish text."""

    model: str = "starter-gpt"
    steps: int = 900
    processes: int = 2
    layers: int = 2
    heads: int = 4
    hidden_size: int = 128
    sequence_length: int = 64
    batch_size: int = 16
    vocab_size: int = 2000

    def dataset_name(self) -> str:
        return f"{self.model}-corpus"

    def job_spec(self, dataset_id: str) -> trainer_pb2.JobSpec:
        return trainer_pb2.JobSpec(
            family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
            architecture=trainer_pb2.ModelArchitecture(
                num_layers=self.layers,
                num_heads=self.heads,
                hidden_size=self.hidden_size,
                max_positions=self.sequence_length * 2,
            ),
            dataset_id=dataset_id,
            hyperparameters=trainer_pb2.Hyperparameters(
                learning_rate=3e-3,
                schedule=trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE,
                warmup_steps=10,
                batch_size=self.batch_size,
                sequence_length=self.sequence_length,
                max_steps=self.steps,
                gradient_clip_norm=1.0,
                seed=7,
            ),
            distributed=trainer_pb2.DistributedConfig(
                processes_per_node=self.processes,
                strategy=trainer_pb2.DISTRIBUTED_STRATEGY_DDP,
            ),
            checkpoint_interval_steps=max(25, self.steps // 4),
            eval_interval_steps=max(25, self.steps // 4),
            registration=trainer_pb2.RegistrationSpec(model_name=self.model, canary_weight=100),
            display_name=f"{self.model} starter",
        )


def online_version(client: Client, model: str) -> int:
    """The version of `model` with the most traffic, or 0 when it is offline or unknown."""
    try:
        routes = client.get_deployment(model).routes
    except NotFound:
        return 0
    best = max(routes, key=lambda route: route.weight, default=None)
    return best.version if best is not None and best.weight > 0 else 0


def train_starter(client: Client, recipe: StarterRecipe) -> trainer_pb2.Job:
    """Prepare the built-in corpus, train with DDP, register and put it online."""
    click.echo("preparing the built-in corpus (Python standard library docstrings)", err=True)
    dataset = client.prepare_dataset(
        recipe.dataset_name(),
        ["builtin:python-docstrings"],
        tokenizer="bpe",
        vocab_size=recipe.vocab_size,
        cleaning=STARTER_CLEANING,
    )
    report = dataset.report
    click.echo(
        f"dataset {dataset.id}: {report.documents_out} documents, "
        f"{report.train_tokens} training tokens, vocabulary {report.vocab_size}",
        err=True,
    )
    job = client.submit_job(recipe.job_spec(dataset.id))
    click.echo(
        f"training {recipe.model} with {recipe.processes}-process DDP (job {job.id})", err=True
    )
    with client.watch_job(job.id) as events:
        final = JobProgress().follow(events) or client.get_job(job.id)
    if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise click.ClickException(f"training job {job.id} did not succeed: {final.error}")
    return final


def probe_token(secret: str) -> str:
    """The token the suite's own readiness probes use: they count against the suite's
    tenant (SYSTEM_TENANT), never against the quota of the tenant being served."""
    return mint_dev_token(
        secret, tenant=SYSTEM_TENANT, scopes=("inference:invoke",), subject="lattice-up-probe"
    )


def wait_until_served(client: Client, ref: str, timeout: float = 120.0) -> float:
    """Poll until the gateway serves `ref`; returns the seconds it took.

    Pass a client holding `probe_token`, so the polling spends no tenant's quota."""
    started = time.monotonic()
    while True:
        try:
            client.generate(ref, "def", max_new_tokens=1, skip_cache=True, timeout=30)
            return time.monotonic() - started
        except (FailedPrecondition, NotFound, Unavailable) as exc:
            if time.monotonic() - started > timeout:
                raise click.ClickException(
                    f"{ref} was not served in {timeout:.0f}s: {exc}"
                ) from None
            time.sleep(0.5)
