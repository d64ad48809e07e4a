"""`python -m services.trainer.worker --job-dir DIR` (launched by torchrun)."""

from services.trainer.worker.train import main

main()
