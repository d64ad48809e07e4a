"""`lattice similar`: the nearest words of a word in a word-embedding model."""

from __future__ import annotations

import click

from lattice.cli._common import Session, lattice_command


@click.command()
@click.argument("model")
@click.argument("word")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=10, show_default=True)
@lattice_command
def similar(session: Session, model: str, word: str, top_k: int) -> None:
    """The TOP_K words nearest (cosine) to WORD in MODEL (a WORD2VEC or GLOVE version)."""
    result = session.client().similar_words(model, word, top_k=top_k)

    def human() -> None:
        for neighbour, score in result.words:
            click.echo(f"{score:.4f}  {neighbour}")

    session.emit(result, human)
