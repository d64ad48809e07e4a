"""`python -m services.trainer.worker --job-dir DIR` (launched by torchrun).

Word-embedding families run their own (non-torch) training; everything else
runs the torch training loop.
"""

from services.trainer.worker.dispatch import main

main()
