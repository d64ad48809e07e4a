"""`python -m services.gateway` runs the gateway service."""

from services.gateway.server import main

main()
