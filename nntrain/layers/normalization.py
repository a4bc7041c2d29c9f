"""Normalization layers: normalization (adapted statistics), batch, layer, group and unit
normalization.

Axes are Keras's: they count the batch axis as 0, so `-1` is the last axis; shapes here and
in `state` exclude the batch axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nntrain.layers.base import Built, Layer, Shape, ShapeError, Weight, as_float, register
from nntrain.lazy import jax, jnp, lax


def resolve_axes(axis: int | Sequence[int], shape: Shape) -> tuple[int, ...]:
    """Keras axes (batch axis counted as 0) as sorted indices into a per-example `shape`."""
    rank = len(shape) + 1
    out = set()
    for a in [axis] if isinstance(axis, int) else axis:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} is out of range for a {rank}-d input (with the batch)")
        if a % rank == 0:
            raise ShapeError("axis 0 is the batch axis")
        out.add(a % rank - 1)
    return tuple(sorted(out))


def _broadcast_shape(shape: Shape, kept: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of per-`kept`-axis statistics broadcast against a batch: (1, ..., C)."""
    return (1, *(d if i in kept else 1 for i, d in enumerate(shape)))


def _in_float32(x: jax.Array) -> tuple[jax.Array, Any]:
    """`x` in float32 for the statistics, and the dtype the output keeps: under bfloat16
    compute a half-precision mean and variance of large activations are percent-level off
    (Keras's normalization layers compute in float32 too)."""
    return x.astype(jnp.float32), as_float(x).dtype


@register("normalization")
class Normalization(Layer):
    """`(x - mean) / sqrt(variance)` with statistics given in the config or learnt by `adapt`
    from the training data, so raw features need no preprocessing outside the model.

    State (like Keras): `mean` and `variance` over the kept axes, and the `count` of values
    they were computed from. With `mean`/`variance` given they are constants, not state."""

    def __init__(self, args) -> None:
        super().__init__(args)
        if args.mean is None:
            self.adapt = self._adapt  # the model adapts only layers that have `adapt`

    def _kept(self, shape: Shape) -> tuple[int, ...]:
        return () if self.args.axis is None else resolve_axes(self.args.axis, shape)

    def build(self, input_shape):
        kept = self._kept(input_shape)
        stats_shape = tuple(input_shape[i] for i in kept)
        if self.args.mean is not None:
            self._given(stats_shape)  # checks that they fit
            return Built({}, {}, input_shape)
        state = {"mean": Weight(stats_shape, "zeros"), "variance": Weight(stats_shape, "ones"),
                 "count": Weight((), "zeros", "int32")}
        return Built({}, state, input_shape)

    def _given(self, stats_shape: Shape) -> dict[str, np.ndarray]:
        try:
            return {k: np.broadcast_to(np.asarray(getattr(self.args, k), np.float32), stats_shape)
                    for k in ("mean", "variance")}
        except ValueError:
            raise ShapeError(f"mean and variance do not broadcast to {stats_shape}") from None

    def _adapt(self, state, x: np.ndarray):
        """Mean and population variance over every axis but the kept ones (and the batch)."""
        x = np.asarray(x, np.float64)
        kept = self._kept(x.shape[1:])
        reduce = (0, *(i + 1 for i in range(x.ndim - 1) if i not in kept))
        count = math.prod(x.shape[a] for a in reduce)
        return {"mean": jnp.asarray(x.mean(axis=reduce), jnp.float32),
                "variance": jnp.asarray(x.var(axis=reduce), jnp.float32),
                "count": jnp.asarray(min(count, np.iinfo(np.int32).max), jnp.int32)}

    def call(self, params, state, x, *, training, rng, **_):
        x = as_float(x)
        kept = self._kept(x.shape[1:])
        stats = state if self.args.mean is None else \
            self._given(tuple(x.shape[1 + i] for i in kept))
        shape = _broadcast_shape(x.shape[1:], kept)
        mean = jnp.reshape(stats["mean"], shape)
        std = jnp.sqrt(jnp.reshape(stats["variance"], shape))
        return (x - mean) / jnp.maximum(std, 1e-7), state


def _scale_and_center(args, shape: Shape) -> dict[str, Weight]:
    params = {}
    if args.scale:
        params["gamma"] = Weight(shape, args.gamma_initializer,
                                 regularizer=args.gamma_regularizer,
                                 constraint=args.gamma_constraint)
    if args.center:
        params["beta"] = Weight(shape, args.beta_initializer, regularizer=args.beta_regularizer,
                                constraint=args.beta_constraint)
    return params


def _normalize(x, mean, var, params, shape, epsilon: float) -> jax.Array:
    y = (x - mean) * lax.rsqrt(var + epsilon)
    if "gamma" in params:
        y = y * jnp.reshape(params["gamma"], shape)
    if "beta" in params:
        y = y + jnp.reshape(params["beta"], shape)
    return y


@register("batch_normalization")
class BatchNormalization(Layer):
    """Normalizes with the batch's statistics in training (and keeps moving averages of them
    for inference). Padding rows of the last batch (mask 0) do not count, nor, as in Keras,
    the padded steps of a sequence with mask_zero's or a masking layer's mask."""

    uses_mask = True
    time_mask_mode = "uses"

    def keeps_time_mask(self) -> bool:
        return True

    def build(self, input_shape):
        kept = resolve_axes(self.args.axis, input_shape)
        shape = tuple(input_shape[i] for i in kept)
        state = {"moving_mean": Weight(shape, self.args.moving_mean_initializer),
                 "moving_variance": Weight(shape, self.args.moving_variance_initializer)}
        return Built(_scale_and_center(self.args, shape), state, input_shape)

    def call(self, params, state, x, *, training, rng, mask=None, time_mask=None, **_):
        x, dtype = _in_float32(x)
        kept = resolve_axes(self.args.axis, x.shape[1:])
        shape = _broadcast_shape(x.shape[1:], kept)
        if not training:
            mean = jnp.reshape(state["moving_mean"], shape)
            var = jnp.reshape(state["moving_variance"], shape)
            return _normalize(x, mean, var, params, shape, self.args.epsilon).astype(dtype), \
                state
        reduce = (0, *(i + 1 for i in range(x.ndim - 1) if i not in kept))
        if mask is None:
            mask = jnp.ones(x.shape[0], x.dtype)
        weights = jnp.reshape(mask.astype(x.dtype), (-1,) + (1,) * (x.ndim - 1))
        if time_mask is not None:  # (batch, steps): the real steps of each sequence
            weights = weights * time_mask.astype(x.dtype).reshape(
                *time_mask.shape, *(1,) * (x.ndim - 2))
        n = jnp.maximum(jnp.broadcast_to(weights, x.shape).sum(reduce, keepdims=True), 1.0)
        mean = (x * weights).sum(reduce, keepdims=True) / n
        var = (jnp.square(x - mean) * weights).sum(reduce, keepdims=True) / n
        m = self.args.momentum
        new_state = {name: state[name] * m + jnp.reshape(batch, state[name].shape) * (1 - m)
                     for name, batch in (("moving_mean", mean), ("moving_variance", var))}
        return _normalize(x, mean, var, params, shape, self.args.epsilon).astype(dtype), \
            new_state


@register("layer_normalization")
class LayerNormalization(Layer):
    """Normalizes each example over `axis`: no batch statistics, so training and inference
    compute the same thing."""

    time_mask_mode = "keeps"

    def build(self, input_shape):
        kept = resolve_axes(self.args.axis, input_shape)
        return Built(_scale_and_center(self.args, tuple(input_shape[i] for i in kept)), {},
                     input_shape)

    def call(self, params, state, x, *, training, rng, **_):
        x, dtype = _in_float32(x)
        kept = resolve_axes(self.args.axis, x.shape[1:])
        axes = tuple(i + 1 for i in kept)
        mean = x.mean(axes, keepdims=True)
        var = jnp.square(x - mean).mean(axes, keepdims=True)
        shape = _broadcast_shape(x.shape[1:], kept)
        return _normalize(x, mean, var, params, shape, self.args.epsilon).astype(dtype), state


@register("group_normalization")
class GroupNormalization(Layer):
    """Keras's GroupNormalization: statistics per example and group of channels, over the
    group's channels and every other axis; the same in training and inference."""

    def _groups(self, channels: int) -> int:
        groups = channels if self.args.groups == -1 else self.args.groups
        if groups > channels:
            raise ShapeError(f"{groups} groups but only {channels} channels: give groups of "
                             f"at most {channels}")
        if channels % groups:
            raise ShapeError(f"{channels} channels do not split into {groups} groups: give "
                             f"groups that divide {channels}")
        return groups

    def build(self, input_shape):
        channel, = resolve_axes(self.args.axis, input_shape)
        channels = input_shape[channel]
        self._groups(channels)
        return Built(_scale_and_center(self.args, (channels,)), {}, input_shape)

    def call(self, params, state, x, *, training, rng, **_):
        x, dtype = _in_float32(x)
        channel = resolve_axes(self.args.axis, x.shape[1:])[0] + 1
        channels = x.shape[channel]
        groups = self._groups(channels)
        grouped = x.reshape(*x.shape[:channel], groups, channels // groups,
                            *x.shape[channel + 1:])
        axes = tuple(i for i in range(1, grouped.ndim) if i != channel)
        mean = grouped.mean(axes, keepdims=True)
        var = jnp.square(grouped - mean).mean(axes, keepdims=True)
        # gamma and beta, one per channel, laid out as the channels are: (groups, per group)
        shape = _broadcast_shape(grouped.shape[1:], (channel - 1, channel))
        y = _normalize(grouped, mean, var, params, shape, self.args.epsilon)
        return y.reshape(x.shape).astype(dtype), state


class OverAxes(Layer):
    """A layer that works on each example over Keras's `axis` (an int or a list)."""

    def build(self, input_shape):
        if not resolve_axes(self.args.axis, input_shape):
            raise ShapeError("axis is an empty list: give the axis (or axes) to work over")
        return Built({}, {}, input_shape)

    def axes(self, x: jax.Array) -> tuple[int, ...]:
        """`axis` as indices into the batch `x`."""
        return tuple(i + 1 for i in resolve_axes(self.args.axis, x.shape[1:]))


@register("unit_normalization")
class UnitNormalization(OverAxes):
    """Keras's UnitNormalization: `x / ||x||` over `axis`, the norm at least 1e-12."""

    def call(self, params, state, x, *, training, rng, **_):
        x, dtype = _in_float32(x)
        squares = jnp.square(x).sum(self.axes(x), keepdims=True)
        return (x * jnp.minimum(lax.rsqrt(squares), 1e12)).astype(dtype), state
