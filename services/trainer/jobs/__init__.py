"""Training jobs: validation, persistence, the queue, process-group supervision,
event fan-out and registration."""
