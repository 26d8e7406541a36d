"""ssl_jax.core."""
