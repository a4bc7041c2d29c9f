"""Keras's TimeDistributed: one layer, one set of weights, applied to each step of a sequence.

(Bidirectional, the other wrapper, lives with the recurrent layers it wraps.)
"""

from __future__ import annotations

from nntrain.config.entries import entry_args, entry_name
from nntrain.layers.base import LAYER_TYPES, Built, Layer, ShapeError, make_layer, register
from nntrain.lazy import jax, jnp


@register("time_distributed")
class TimeDistributed(Layer):
    """The wrapped layer sees one step at a time, (batch, ...) for a (batch, steps, ...)
    input. A layer without state runs on all steps at once, as one (batch * steps, ...) batch:
    the same numbers, one call. A layer with state (batch_normalization) runs step after step,
    as in Keras 3: each step is normalized by its own batch statistics, and the moving
    averages are updated once per step. A mask over the steps passes through; a
    batch_normalization inside leaves the masked steps out of its statistics."""

    time_mask_mode = "uses"

    def __init__(self, args) -> None:
        super().__init__(args)
        self.inner = make_layer(LAYER_TYPES[entry_name(args.layer)], entry_args(args.layer))
        self.uses_mask = self.inner.uses_mask
        if hasattr(self.inner, "adapt"):  # normalization: its statistics over every step
            self.adapt = lambda state, x: self.inner.adapt(
                state, x.reshape(-1, *x.shape[2:]))

    def keeps_time_mask(self) -> bool:
        return True

    @property
    def activation(self) -> str | None:
        return self.inner.activation

    def build(self, input_shape):
        kind = self.inner.type_name
        if len(input_shape) < 2:
            raise ShapeError(f"it takes sequences, (steps, ...); got {input_shape}: apply "
                             f"{kind} directly, without time_distributed")
        if self.inner.multi_input:
            raise ShapeError(f"{kind} joins several inputs; time_distributed wraps layers of "
                             "one input")
        if self.inner.makes_time_mask():
            raise ShapeError(f"{kind} makes a mask over steps, which time_distributed cannot "
                             f"pass on: put {kind} outside it")
        try:
            built = self.inner.build(input_shape[1:])
        except ShapeError as e:
            raise ShapeError(f"the wrapped {kind}, given each step of shape "
                             f"{input_shape[1:]}: {e}") from None
        return Built(built.params, built.state, (input_shape[0], *built.output_shape))

    def call(self, params, state, x, *, training, rng, mask=None, time_mask=None, **_):
        batch, steps = x.shape[:2]
        rows = None  # the (batch, steps) entries batch statistics may count
        if self.inner.uses_mask:
            rows = jnp.ones((batch, steps), x.dtype) if mask is None \
                else jnp.broadcast_to(mask.astype(x.dtype)[:, None], (batch, steps))
            if time_mask is not None:
                rows = rows * time_mask.astype(x.dtype)
        if not state:
            flat = x.reshape(batch * steps, *x.shape[2:])
            extra = {} if rows is None else {"mask": rows.reshape(-1)}
            y, state = self.inner.call(params, state, flat, training=training, rng=rng,
                                       **extra)
            return y.reshape(batch, steps, *y.shape[1:]), state

        def step(carry, t):
            extra = {} if rows is None else {"mask": rows[:, t]}
            y, carry = self.inner.call(params, carry, x[:, t], training=training,
                                       rng=None if rng is None else jax.random.fold_in(rng, t),
                                       **extra)
            return carry, y

        state, ys = jax.lax.scan(step, state, jnp.arange(steps))
        return jnp.moveaxis(ys, 0, 1), state
