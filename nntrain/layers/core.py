"""Core layers: dense, flatten, activation, dropout, rescaling, reshape, masking."""

from __future__ import annotations

import math

from nntrain.layers.base import Built, Layer, ShapeError, Weight, register
from nntrain.lazy import jax, jnp


@register("dense")
class Dense(Layer):
    """`activation(x @ kernel + bias)` on the last axis."""

    time_mask_mode = "keeps"

    def build(self, input_shape):
        a = self.args
        params = {"kernel": Weight((input_shape[-1], a.units), a.kernel_initializer,
                                   regularizer=a.kernel_regularizer,
                                   constraint=a.kernel_constraint)}
        if a.use_bias:
            params["bias"] = Weight((a.units,), a.bias_initializer,
                                    regularizer=a.bias_regularizer, constraint=a.bias_constraint)
        return Built(params, {}, (*input_shape[:-1], a.units))

    def call(self, params, state, x, *, training, rng, **_):
        y = x @ params["kernel"]
        if "bias" in params:
            y = y + params["bias"]
        return y, state


@register("flatten")
class Flatten(Layer):
    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def call(self, params, state, x, *, training, rng, **_):
        return x.reshape(x.shape[0], -1), state


@register("activation")
class Activation(Layer):
    time_mask_mode = "keeps"

    def call(self, params, state, x, *, training, rng, **_):
        return x, state


@register("dropout")
class Dropout(Layer):
    """Inverted dropout: a fresh mask each training step from the step's key."""

    time_mask_mode = "keeps"

    def output_shape(self, input_shape):
        given = self.args.noise_shape
        if given is None:
            return input_shape
        written = str(given).replace("None", "null")  # as the config writes it
        if len(given) != len(input_shape) + 1:
            raise ShapeError(f"noise_shape {written} has {len(given)} sizes; the input has "
                             f"{len(input_shape) + 1} axes, the batch's first: "
                             f"{str([None, *input_shape]).replace('None', 'null')}")
        if given[0] not in (None, 1):
            raise ShapeError(f"noise_shape's first size is the batch's: give null (a mask "
                             f"per example) or 1 (one for the batch), not {given[0]}")
        for axis, (size, n) in enumerate(zip(given[1:], input_shape, strict=True), start=1):
            if size not in (None, 1, n):
                raise ShapeError(f"noise_shape {written}: axis {axis} has {n} values, so its "
                                 f"size is null, {n} or 1 (one draw shared along it)")
        return input_shape

    def call(self, params, state, x, *, training, rng, **_):
        rate = self.args.rate
        if not training or rate == 0.0:
            return x, state
        given = self.args.noise_shape
        shape = x.shape if given is None else tuple(
            n if size is None else size for size, n in zip(given, x.shape, strict=True))
        keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0), state


@register("rescaling")
class Rescaling(Layer):
    time_mask_mode = "keeps"

    def call(self, params, state, x, *, training, rng, **_):
        return x.astype(jnp.float32) * self.args.scale + self.args.offset, state


@register("reshape")
class Reshape(Layer):
    def output_shape(self, input_shape):
        target = list(self.args.target_shape)
        size = math.prod(input_shape)
        if -1 in target:  # (at most one: the arguments say so)
            known = math.prod(d for d in target if d != -1)
            if known == 0 or size % known:
                raise ShapeError(f"cannot reshape {input_shape} to {tuple(target)}")
            target[target.index(-1)] = size // known
        if math.prod(target) != size:
            raise ShapeError(f"cannot reshape {input_shape} ({size} values) to {tuple(target)}")
        return tuple(target)

    def call(self, params, state, x, *, training, rng, **_):
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:])), state


@register("masking")
class Masking(Layer):
    """Keras's Masking: a step whose features all equal `mask_value` is padding. Such steps
    come out as zeros, and the layers after it skip them as they skip an embedding's
    mask_zero padding."""

    def makes_time_mask(self) -> bool:
        return True

    def output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ShapeError(f"it takes sequences, (steps, features); got {tuple(input_shape)}")
        return input_shape

    def time_mask(self, x):
        return jnp.any(x != self.args.mask_value, axis=-1)

    def call(self, params, state, x, *, training, rng, **_):
        return x * self.time_mask(x)[..., None].astype(x.dtype), state
