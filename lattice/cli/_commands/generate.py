"""`lattice generate`: one completion, or tokens as they arrive with --stream."""

from __future__ import annotations

import json

import click

from lattice.cli._common import Session, lattice_command, to_jsonable


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--stream", "streaming", is_flag=True, help="Print tokens as they arrive.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=None,
    help="0 or unset: greedy (deterministic, cacheable).",
)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None)
@click.option("--top-k", type=click.IntRange(min=0), default=None)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Fixes sampling; makes it cacheable."
)
@click.option("--stop", multiple=True, help="Stop before this text (repeatable).")
@click.option("--skip-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--routing-key", default="", help="Sticky routing key.")
@lattice_command
def generate(session: Session, model: str, prompt: str, streaming: bool, **params) -> None:
    """Generate a completion of PROMPT with MODEL ("name", "name@alias" or "name:N").

    With --json and --stream, prints one JSON object per delta (JSON lines).
    """
    client = session.client()
    if not streaming:
        result = client.generate(model, prompt, **params)
        session.emit(result, lambda: click.echo(result.text))
        return
    last = None
    with client.stream(model, prompt, **params) as deltas:
        for delta in deltas:
            last = delta
            if session.as_json:
                click.echo(json.dumps(to_jsonable(delta)))
            else:
                click.echo(delta.text, nl=False)
    if not session.as_json:
        click.echo()
        if last is not None and last.finish_reason:
            click.echo(f"[{last.finish_reason}]", err=True)
