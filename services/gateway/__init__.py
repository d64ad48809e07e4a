"""Gateway: the public door (authentication, authorisation, quotas, routing)."""
