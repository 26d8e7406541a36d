"""ssl_jax.io."""
