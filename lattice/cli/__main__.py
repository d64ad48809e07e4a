"""`python -m lattice.cli` is the `lattice` command."""

from lattice.cli import main

main(prog_name="lattice")
