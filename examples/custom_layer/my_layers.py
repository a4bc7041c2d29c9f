"""A custom layer for nntrain: a gated dense layer, `sigmoid(x W_g + b_g) * (x W + b)`.

A layer is a class with `init(rng, input_shape) -> (params, state, output_shape)` and
`apply(params, state, x, *, training, rng) -> (y, state)`; subclassing nntrain's `Layer` adds
the `activation` argument for free (it wraps `call`). An `Args` pydantic model, if present,
checks the arguments the config gives.
"""

import jax
import jax.numpy as jnp
from pydantic import BaseModel, PositiveInt

from nntrain.layers import Layer


class Gated(Layer):
    class Args(BaseModel):
        units: PositiveInt
        activation: str | None = None
        name: str | None = None
        inputs: str | list[str] | None = None

    def init(self, rng, input_shape):
        k1, k2 = jax.random.split(rng)
        fan_in, units = input_shape[-1], self.args.units
        glorot = jax.nn.initializers.glorot_uniform()
        params = {
            "kernel": glorot(k1, (fan_in, units)),
            "bias": jnp.zeros(units),
            "gate_kernel": glorot(k2, (fan_in, units)),
            "gate_bias": jnp.zeros(units),
        }
        return params, {}, (*input_shape[:-1], units)

    def call(self, params, state, x, *, training, rng, **_):
        gate = jax.nn.sigmoid(x @ params["gate_kernel"] + params["gate_bias"])
        return gate * (x @ params["kernel"] + params["bias"]), state
