"""`python -m services.inference` runs the inference service."""

from services.inference.server import main

main()
