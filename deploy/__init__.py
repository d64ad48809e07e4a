"""Deployment assets and checks; `python -m deploy.render_pytorchjob` prints a job's PyTorchJob."""
