"""The gateway's HTTP front: OpenAI-compatible `/v1`, health, on the gRPC front's pipeline."""
