import jax
import pytest

# Parity is judged at full float32 matmul precision (matters on GPUs; a no-op on CPU).
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def rng():
    import numpy as np

    return np.random.default_rng(1234)
