"""Benchmarks behind `python -m line_jax.bench`."""
