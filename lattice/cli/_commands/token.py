"""`lattice token`: mint a development token for a gateway started by `lattice up`."""

from __future__ import annotations

from pathlib import Path

import click

from lattice.cli._common import run_reporting_errors

#: Where `lattice up` keeps the dev secret, under its data directory.
from lattice.tokens import ALL_SCOPES, DEV_SECRET_FILE, TENANT_SCOPES, mint_dev_token


def find_secret(secret: str | None, data_dir: Path) -> str:
    if secret:
        return secret
    path = data_dir / DEV_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    raise ValueError(
        f"no dev secret: set LATTICE_DEV_JWT_SECRET or run `lattice up` (it writes {path})"
    )


@click.command()
@click.option("--tenant", default="dev", show_default=True, help="Tenant the token acts for.")
@click.option("--subject", default="dev", show_default=True, help="Who the token names.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(ALL_SCOPES),
    help="Repeatable; default: every scope but admin.",
)
@click.option(
    "--admin",
    "as_admin",
    is_flag=True,
    help="Add the admin scope: see and manage every tenant's models, datasets and jobs.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Lifetime in seconds.",
)
@click.option(
    "--secret",
    envvar="LATTICE_DEV_JWT_SECRET",
    default=None,
    help="HMAC secret of the gateway [LATTICE_DEV_JWT_SECRET].",
)
@click.option(
    "--data-dir",
    envvar="LATTICE_DATA_DIR",
    default=".lattice",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where `lattice up` wrote the dev secret [LATTICE_DATA_DIR].",
)
@click.option(
    "--export", "as_export", is_flag=True, help="Print `export LATTICE_TOKEN=...` for eval."
)
def token(
    tenant: str,
    subject: str,
    scopes: tuple[str, ...],
    as_admin: bool,
    ttl: float,
    secret: str | None,
    data_dir: Path,
    as_export: bool,
) -> None:
    """Mint a development JWT (HS256) for the local gateway.

    \b
    export LATTICE_TOKEN=$(lattice token --tenant acme)
    eval "$(lattice token --export)"
    lattice token --admin      # an operator's token: every tenant's resources
    """

    def body() -> None:
        chosen = list(scopes or TENANT_SCOPES)
        if as_admin and "admin" not in chosen:
            chosen.append("admin")
        minted = mint_dev_token(
            find_secret(secret, data_dir),
            tenant=tenant,
            scopes=chosen,
            subject=subject,
            lifetime=ttl,
        )
        click.echo(f"export LATTICE_TOKEN={minted}" if as_export else minted)

    run_reporting_errors(body)
