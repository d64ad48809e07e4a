"""`lattice deploy`: put versions online with traffic weights, in one line."""

from __future__ import annotations

import click

from lattice.cli._common import Session, lattice_command


def parse_routes(values: tuple[str, ...]) -> dict[int, int]:
    """("1=90", "2=10") -> {1: 90, 2: 10}; a bare "2" means 2=100."""
    routes: dict[int, int] = {}
    for value in values:
        version, sep, weight = value.partition("=")
        try:
            routes[int(version)] = int(weight) if sep else 100
        except ValueError:
            raise click.BadParameter(
                f"expected VERSION=WEIGHT (integers), got {value!r}", param_hint="ROUTES"
            ) from None
    return routes


def describe(deployment) -> str:
    routes = ", ".join(f"v{r.version}={r.weight}%" for r in deployment.routes) or "offline"
    if deployment.shadow_version:
        routes += f"; shadow v{deployment.shadow_version}"
    return routes


@click.command()
@click.argument("model")
@click.argument("routes", nargs=-1, metavar="VERSION=WEIGHT...")
@click.option(
    "--shadow",
    type=click.IntRange(min=0),
    default=0,
    help="Version that gets a copy of the traffic (answers discarded).",
)
@click.option("--reason", default="", help="Recorded in the deployment history.")
@click.option("--offline", is_flag=True, help="Take the model offline (no routes).")
@click.option(
    "--expected-revision",
    type=int,
    default=0,
    help="Fail (ABORTED) if the deployment changed since this revision.",
)
@lattice_command
def deploy(
    session: Session,
    model: str,
    routes: tuple[str, ...],
    shadow: int,
    reason: str,
    offline: bool,
    expected_revision: int,
) -> None:
    """Replace MODEL's deployment. Weights sum to 100.

    \b
    lattice deploy tiny-gpt 1=100            # all traffic on v1
    lattice deploy tiny-gpt 1=90 2=10        # canary v2 at 10%
    lattice deploy tiny-gpt 1=100 --reason "rollback: v2 regressed"
    lattice deploy tiny-gpt 1=100 --shadow 2 # mirror traffic to v2
    lattice deploy tiny-gpt --offline
    """
    if not routes and not offline and not shadow:
        raise click.UsageError("give VERSION=WEIGHT routes, --shadow, or --offline")
    if routes and offline:
        raise click.UsageError("--offline takes no routes")
    deployment = session.client().deploy(
        model,
        parse_routes(routes),
        shadow=shadow,
        reason=reason,
        expected_revision=expected_revision,
    )
    session.emit(
        deployment,
        lambda: click.echo(f"{model}: {describe(deployment)} (revision {deployment.revision})"),
    )
