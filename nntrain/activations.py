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
    }


def get(name: str | None) -> Activation:
    return _activations()[name or "linear"]
