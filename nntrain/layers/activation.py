"""Keras's activation layers: ReLU (with a cap, a threshold and a slope), LeakyReLU, PReLU
(a trained slope) and ELU. Each works value by value, so a sequence's mask passes through."""

from __future__ import annotations

from nntrain.layers.base import Built, Layer, Weight, as_float, register
from nntrain.layers.normalization import OverAxes, resolve_axes
from nntrain.lazy import jax, jnp


class ElementWiseActivation(Layer):
    time_mask_mode = "keeps"


@register("relu")
class ReLU(ElementWiseActivation):
    def call(self, params, state, x, *, training, rng, **_):
        # Keras's own sequence of steps, so that its edge cases (x at the threshold gives 0)
        # come out the same
        a, x = self.args, as_float(x)
        y = jnp.where(x > a.threshold, x, 0.0)
        if a.max_value is not None:
            y = jnp.clip(y, 0.0, a.max_value)
        return y - a.negative_slope * jnp.maximum(a.threshold - x, 0.0), state


@register("leaky_relu")
class LeakyReLU(ElementWiseActivation):
    def call(self, params, state, x, *, training, rng, **_):
        x = as_float(x)
        return jnp.where(x >= 0, x, self.args.negative_slope * x), state


@register("elu")
class ELU(ElementWiseActivation):
    def call(self, params, state, x, *, training, rng, **_):
        x = as_float(x)
        return jnp.where(x > 0, x, self.args.alpha * jnp.expm1(jnp.minimum(x, 0.0))), state


@register("prelu")
class PReLU(ElementWiseActivation):
    def build(self, input_shape):
        a = self.args
        shape = list(input_shape)
        if a.shared_axes is not None:
            for axis in resolve_axes(a.shared_axes, tuple(input_shape)):
                shape[axis] = 1
        alpha = Weight(tuple(shape), a.alpha_initializer, regularizer=a.alpha_regularizer,
                       constraint=a.alpha_constraint)
        return Built({"alpha": alpha}, {}, tuple(input_shape))

    def call(self, params, state, x, *, training, rng, **_):
        x = as_float(x)
        return jnp.maximum(x, 0.0) + params["alpha"] * jnp.minimum(x, 0.0), state


@register("softmax")
class Softmax(OverAxes):
    """Keras's Softmax layer: over `axis`, or over several axes together. Over the last axis
    it is the `softmax` activation, so that a cross-entropy after it takes the values before
    it (stable log-softmax) and predict reads it as class probabilities."""

    @property
    def activation(self) -> str | None:
        return "softmax" if self.args.axis in (-1, [-1]) else None

    def call(self, params, state, x, *, training, rng, **_):
        if self.activation:  # applied by `apply`, after this
            return as_float(x), state
        return jax.nn.softmax(as_float(x), axis=self.axes(x)), state
