"""ssl_jax.workflows."""
