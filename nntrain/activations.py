"""Activation functions by Keras name."""

from __future__ import annotations

import functools
from collections.abc import Callable

from nntrain.lazy import jax, jnp

Activation = Callable[["jax.Array"], "jax.Array"]


@functools.cache
def _activations() -> dict[str, Activation]:
    nn = jax.nn
    return {
        "linear": lambda x: x,
        "relu": nn.relu,
        "sigmoid": nn.sigmoid,
        "tanh": jnp.tanh,
        "softmax": nn.softmax,
        "log_softmax": nn.log_softmax,
        "softplus": nn.softplus,
        "softsign": nn.soft_sign,
        "selu": nn.selu,
        "elu": nn.elu,
        "gelu": lambda x: nn.gelu(x, approximate=False),  # Keras's default is the exact form
        "swish": nn.swish,
        "silu": nn.silu,
        "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),  # Keras's default slope
        "relu6": nn.relu6,
        "hard_sigmoid": nn.hard_sigmoid,
        "exponential": jnp.exp,
        # Keras's formulas, with its default arguments (thresholds 0.5, squareplus's b 4)
        "mish": lambda x: x * jnp.tanh(nn.softplus(x)),
        "celu": nn.celu,
        "hard_silu": nn.hard_swish,
        "hard_swish": nn.hard_swish,
        "hard_tanh": nn.hard_tanh,
        "log_sigmoid": nn.log_sigmoid,
        "tanh_shrink": lambda x: x - jnp.tanh(x),
        "soft_shrink": lambda x: jnp.where(x > 0.5, x - 0.5, jnp.where(x < -0.5, x + 0.5, 0.0)),
        "hard_shrink": lambda x: jnp.where(jnp.abs(x) > 0.5, x, 0.0),
        "squareplus": lambda x: (x + jnp.sqrt(jnp.square(x) + 4.0)) / 2,
        "sparse_plus": nn.sparse_plus,
        "sparse_sigmoid": nn.sparse_sigmoid,
    }


def get(name: str | None) -> Activation:
    return _activations()[name or "linear"]
