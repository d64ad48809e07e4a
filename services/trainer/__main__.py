"""`python -m services.trainer` runs the trainer service."""

from services.trainer.server import main

main()
