"""ssl_jax.figures."""
