"""`python -m services.registry` runs the registry service."""

from services.registry.server import main

main()
