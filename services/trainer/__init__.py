"""Trainer: data preparation and torchrun training jobs that register their models."""
