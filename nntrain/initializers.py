"""Weight initializers by Keras name, with Keras's scales (jax.nn.initializers underneath)."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jax.nn import initializers as init

Initializer = Callable[..., jnp.ndarray]

INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": init.glorot_uniform(),
    "glorot_normal": init.glorot_normal(),
    "he_uniform": init.he_uniform(),
    "he_normal": init.he_normal(),
    "lecun_uniform": init.lecun_uniform(),
    "lecun_normal": init.lecun_normal(),
    "zeros": init.zeros,
    "ones": init.ones,
    "random_normal": init.normal(0.05),  # Keras: stddev 0.05
    "random_uniform": init.uniform(0.1),  # Keras: [-0.05, 0.05]; shifted below
    "truncated_normal": init.truncated_normal(0.05),
    "orthogonal": init.orthogonal(),
}


def get(name: str) -> Initializer:
    if name == "random_uniform":
        return lambda key, shape, dtype=jnp.float32: init.uniform(0.1)(key, shape, dtype) - 0.05
    return INITIALIZERS[name]
