"""Weight initializers by Keras name, with Keras's scales (jax.nn.initializers underneath)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from nntrain.lazy import jax

Initializer = Callable[..., "jax.Array"]


# Keras's variance-scaling initializers: (scale, mode, distribution)
VARIANCE_SCALING = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def _variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """JAX's variance scaling, and for the vectors and scalars it refuses, Keras's fans:
    fan_in = fan_out = the length (1 for a scalar). They are drawn as an (n, 1) matrix,
    whose fans JAX takes as n and 1, with the scale corrected to Keras's."""
    matrix = jax.nn.initializers.variance_scaling(scale, mode, distribution)

    def init(key, shape, dtype="float32"):
        if len(shape) >= 2:
            return matrix(key, shape, dtype)
        n = shape[0] if shape else 1
        fan = {"fan_in": n, "fan_out": 1, "fan_avg": (n + 1) / 2}[mode]  # JAX's, for (n, 1)
        drawn = jax.nn.initializers.variance_scaling(scale * fan / n, mode, distribution)(
            key, (n, 1), dtype)
        return drawn.reshape(shape)

    return init


@functools.cache
def _initializers() -> dict[str, Initializer]:
    init = jax.nn.initializers
    uniform = init.uniform(0.1)  # Keras: [-0.05, 0.05]; JAX's is [0, 0.1), shifted below
    return {
        **{name: _variance_scaling(*args) for name, args in VARIANCE_SCALING.items()},
        "zeros": init.zeros,
        "ones": init.ones,
        "random_normal": init.normal(0.05),  # Keras: stddev 0.05
        "random_uniform": lambda key, shape, dtype="float32": uniform(key, shape, dtype) - 0.05,
        "truncated_normal": init.truncated_normal(0.05),
        "orthogonal": init.orthogonal(),
    }


def get(name: str) -> Initializer:
    return _initializers()[name]
