"""Triton Python-backend model files that `triton_export` copies into a model
repository as `<model>/<version>/model.py`. They run inside Triton's Python
stub (not in Lattice), so they depend only on numpy, torch, transformers and
`triton_python_backend_utils`; nothing here is imported by Lattice itself."""
