"""Keras's noise layers, which act only while training: alpha_dropout (for SELU networks),
gaussian_noise, gaussian_dropout, and spatial_dropout1d/2d/3d (whole channels)."""

from __future__ import annotations

import math

from nntrain.layers.base import Layer, as_float, register
from nntrain.layers.conv import check_rank
from nntrain.lazy import jax, jnp

# SELU's constants: its negative saturation is -ALPHA * SCALE
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Noise(Layer):
    time_mask_mode = "keeps"

    def call(self, params, state, x, *, training, rng, **_):
        if not training or rng is None or self.amount() == 0.0:
            return x, state
        return self.noisy(as_float(x), rng), state

    def amount(self) -> float:
        return self.args.rate

    def noisy(self, x: jax.Array, rng: jax.Array) -> jax.Array:
        raise NotImplementedError


@register("alpha_dropout")
class AlphaDropout(Noise):
    def noisy(self, x, rng):
        rate, saturated = self.args.rate, -SELU_ALPHA * SELU_SCALE
        keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
        # the affine map that brings the mean and variance back to what they were
        a = ((1.0 - rate) * (1.0 + rate * saturated**2)) ** -0.5
        b = -a * saturated * rate
        return a * jnp.where(keep, x, saturated) + b


@register("gaussian_noise")
class GaussianNoise(Noise):
    def amount(self) -> float:
        return self.args.stddev

    def noisy(self, x, rng):
        return x + self.args.stddev * jax.random.normal(rng, x.shape, x.dtype)


@register("gaussian_dropout")
class GaussianDropout(Noise):
    def noisy(self, x, rng):
        stddev = math.sqrt(self.args.rate / (1.0 - self.args.rate))
        return x * (1.0 + stddev * jax.random.normal(rng, x.shape, x.dtype))


class SpatialDropout(Noise):
    rank: int

    def output_shape(self, input_shape):
        check_rank(self, input_shape, self.rank)
        return input_shape

    def noisy(self, x, rng):
        rate = self.args.rate
        # one draw per example and channel, shared by every step or pixel
        keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0], *[1] * self.rank,
                                                      x.shape[-1]))
        return jnp.where(keep, x / (1.0 - rate), 0.0)


for _rank in (1, 2, 3):
    register(f"spatial_dropout{_rank}d")(type(f"SpatialDropout{_rank}D", (SpatialDropout,),
                                              {"rank": _rank}))
