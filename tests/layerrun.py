"""One built-in layer run on its own in tests: built from its config arguments, applied."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nntrain.config.layers import LAYERS
from nntrain.layers import LAYER_TYPES
from nntrain.layers.base import make_layer


def run_layer(name: str, x: np.ndarray, params: dict | None = None,
              **args) -> tuple[np.ndarray, dict]:
    """The layer's output for `x` (with its own fresh weights, or `params`), and the weights
    it made; its build's output shape is checked against the one apply gives."""
    layer = make_layer(LAYER_TYPES[name], LAYERS.args[LAYERS.canonical(name)](**args))
    made, state, shape = layer.init(jax.random.key(0), x.shape[1:])
    y, _ = layer.apply(made if params is None else params, state, jnp.asarray(x))
    assert y.shape[1:] == shape
    return np.asarray(y), made
