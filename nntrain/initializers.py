"""Weight initializers: Keras's, by name and with their arguments and scales
(jax.nn.initializers underneath)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nntrain.config.entries import entry_args
from nntrain.config.layers import INITIALIZERS, initializer_name
from nntrain.lazy import jax, jnp

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


def get(entry: Any) -> Initializer:
    """The `(key, shape, dtype) -> array` an initializer entry (or a bare Keras name) gives.
    With a `seed`, the key passed in is set aside for the seed's own."""
    name = name_of(entry)
    args = INITIALIZERS.args[name]() if isinstance(entry, str) else entry_args(entry)
    init = _made(name, args)
    seed = getattr(args, "seed", None)
    if seed is None:
        return init
    return lambda key, shape, dtype="float32": init(jax.random.key(seed), shape, dtype)


# Keras's VarianceScaling distributions by JAX's names
_DISTRIBUTIONS = {"truncated_normal": "truncated_normal", "untruncated_normal": "normal",
                  "uniform": "uniform"}


def _made(name: str, a: Any) -> Initializer:
    init = jax.nn.initializers
    if name in VARIANCE_SCALING:
        return _variance_scaling(*VARIANCE_SCALING[name])
    if name == "variance_scaling":
        return _variance_scaling(a.scale, a.mode, _DISTRIBUTIONS[a.distribution])
    if name == "zeros":
        return init.zeros
    if name == "ones":
        return init.ones
    if name == "constant":
        return lambda key, shape, dtype="float32": jnp.full(shape, a.value, dtype)
    if name == "random_normal":
        return lambda key, shape, dtype="float32": \
            a.mean + a.stddev * jax.random.normal(key, shape, dtype)
    if name == "truncated_normal":  # redrawn past 2 stddev, as Keras's: no rescaling after
        return lambda key, shape, dtype="float32": \
            a.mean + a.stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
    if name == "random_uniform":
        return lambda key, shape, dtype="float32": \
            a.minval + (a.maxval - a.minval) * jax.random.uniform(key, shape, dtype)
    if name == "orthogonal":
        return init.orthogonal(a.gain)
    if name == "identity":  # 2-dimensional weights only (the model checks)
        return lambda key, shape, dtype="float32": a.gain * jnp.eye(*shape, dtype=dtype)
    raise ValueError(f"unknown initializer {name}")


def needs_matrix(entry: Any) -> str | None:
    """How many dimensions an initializer needs of a weight, for messages: '2 or more'
    (orthogonal), 'exactly 2' (identity), or None for any."""
    return {"orthogonal": "2 or more", "identity": "exactly 2"}.get(name_of(entry))


def name_of(entry: Any) -> str:
    """The registered name of an initializer entry or of a bare Keras name."""
    return INITIALIZERS.canonical(entry) if isinstance(entry, str) else initializer_name(entry)
