"""Weight initializers by Keras name, with Keras's scales (jax.nn.initializers underneath)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from nntrain.lazy import jax

Initializer = Callable[..., "jax.Array"]


@functools.cache
def _initializers() -> dict[str, Initializer]:
    init = jax.nn.initializers
    uniform = init.uniform(0.1)  # Keras: [-0.05, 0.05]; optax's is [0, 0.1), shifted below
    return {
        "glorot_uniform": init.glorot_uniform(),
        "glorot_normal": init.glorot_normal(),
        "he_uniform": init.he_uniform(),
        "he_normal": init.he_normal(),
        "lecun_uniform": init.lecun_uniform(),
        "lecun_normal": init.lecun_normal(),
        "zeros": init.zeros,
        "ones": init.ones,
        "random_normal": init.normal(0.05),  # Keras: stddev 0.05
        "random_uniform": lambda key, shape, dtype="float32": uniform(key, shape, dtype) - 0.05,
        "truncated_normal": init.truncated_normal(0.05),
        "orthogonal": init.orthogonal(),
    }


def get(name: str) -> Initializer:
    return _initializers()[name]
