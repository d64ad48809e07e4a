"""`lattice classify`: the labels of a text under a classification model."""

from __future__ import annotations

import click

from lattice.cli._common import Session, lattice_command


@click.command()
@click.argument("model")
@click.argument("text")
@click.option(
    "-k", "--top-k", type=click.IntRange(0, 1000), default=0, help="Labels shown; 0 = all."
)
@lattice_command
def classify(session: Session, model: str, text: str, top_k: int) -> None:
    """The labels of TEXT under MODEL (a SEQUENCE_CLASSIFICATION version), with
    probabilities, most likely first."""
    result = session.client().classify(model, text, top_k=top_k)

    def human() -> None:
        for label, score in result.labels[0]:
            click.echo(f"{score:.4f}  {label}")

    session.emit(result, human)
