"""Activation functions by Keras name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "selu": jax.nn.selu,
    "elu": jax.nn.elu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Keras's default is the exact form
    "swish": jax.nn.swish,
    "silu": jax.nn.silu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),  # Keras's default slope
    "relu6": jax.nn.relu6,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "exponential": jnp.exp,
}


def get(name: str | None) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[name or "linear"]
