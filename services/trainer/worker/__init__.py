"""The training worker: runs under `torchrun`, one process per rank, never in the service.

It talks to the supervising service only through files in the job directory:
`job.json` (in), `events.jsonl` (rank 0 appends one JSON object per line),
`checkpoints/`, `best/`, `export/` and `result.json` (out).
"""
