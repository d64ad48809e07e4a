"""Deployment assets; `deploy.render_pytorchjob` is importable by the trainer."""
