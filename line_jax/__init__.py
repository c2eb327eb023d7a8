"""line_jax: LINE teacher-teacher alignment in JAX."""

__version__ = "0.1.0"
