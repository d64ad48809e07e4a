"""The four Lattice services and the shared runtime they are built on."""
