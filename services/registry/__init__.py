"""Registry: models, immutable versions, artifacts, aliases, deployments, policy, Watch."""
