"""`lattice embed`: vectors for texts from an encoder model."""

from __future__ import annotations

import click

from lattice.cli._common import Session, lattice_command


@click.command()
@click.argument("model")
@click.argument("texts", nargs=-1, required=True)
@click.option("--normalize", is_flag=True, help="L2-normalise each vector.")
@click.option("--skip-cache", is_flag=True)
@lattice_command
def embed(
    session: Session, model: str, texts: tuple[str, ...], normalize: bool, skip_cache: bool
) -> None:
    """Embed each of TEXTS with MODEL; prints one vector per line (or --json)."""
    result = session.client().embed(model, list(texts), normalize=normalize, skip_cache=skip_cache)

    def human() -> None:
        for text, vector in zip(texts, result.vectors, strict=True):
            shown = " ".join(f"{x:.4f}" for x in vector[:8])
            more = f" … ({len(vector)} dims)" if len(vector) > 8 else ""
            click.echo(f"{text[:30]!r}: [{shown}{more}]")

    session.emit(result, human)
