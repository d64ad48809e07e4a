"""Inference: serves the online versions with local transformers or Triton backends."""
