"""`lattice keys`: look at and rotate the suite's key ring.

Rotation adds a version; services pick it up within a second (they re-read
the ring when it changes) and seal, sign and mint with it from then on,
while everything sealed under older versions still opens.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.runtime.keys import DEFAULT_KEY_RING_PATH, create_key_ring, rotate_key_ring


def _ring_path(data_dir: Path, key_ring_file: Path | None) -> Path:
    return key_ring_file or data_dir / DEFAULT_KEY_RING_PATH


_RING_OPTIONS = [
    click.option(
        "--data-dir",
        default=".lattice",
        show_default=True,
        envvar="LATTICE_DATA_DIR",
        type=click.Path(file_okay=False, path_type=Path),
    ),
    click.option(
        "--key-ring-file",
        default=None,
        envvar="LATTICE_KEY_RING_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The ring itself (default <data-dir>/keys/keyring.json).",
    ),
]


def _ring_options(command):
    for option in reversed(_RING_OPTIONS):
        command = option(command)
    return command


@click.group()
def keys() -> None:
    """The key ring that signs internal tokens and artifacts and seals the cache."""


@keys.command()
@_ring_options
def rotate(data_dir: Path, key_ring_file: Path | None) -> None:
    """Add a new key version (or create the ring); new writes use it, old ones still open."""
    path = _ring_path(data_dir, key_ring_file)
    if create_key_ring(path):
        click.echo(f"key ring {path}: created at version 1 (k1)")
        return
    version = rotate_key_ring(path)
    click.echo(f"key ring {path}: now at version {version} (k{version})")


@keys.command(name="list")
@_ring_options
def list_versions(data_dir: Path, key_ring_file: Path | None) -> None:
    """The ring's versions and when each was made (never the secrets)."""
    path = _ring_path(data_dir, key_ring_file)
    if not path.exists():
        raise click.ClickException(f"no key ring at {path} (lattice up creates one)")
    for entry in json.loads(path.read_text())["versions"]:
        click.echo(f"k{entry['version']}\t{entry['created']}")
