"""`python -m ssl_jax.cli`: the `ssl-jax` command."""

from ssl_jax.cli import main

main()
