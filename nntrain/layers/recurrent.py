"""Recurrent layers: SimpleRNN, LSTM and GRU over (timesteps, features) sequences, with
Keras's equations, weight layouts, gate orders and defaults. The inputs of every step are
projected by the kernel in one matrix multiply before the time loop; the loop itself is a
`lax.scan` over the steps.

Dropout follows Keras: one mask per sequence for the inputs (`dropout`) and one for the
carried output (`recurrent_dropout`), the same at every step.
"""

from __future__ import annotations

from typing import ClassVar

from nntrain import activations, initializers
from nntrain.config.entries import entry_args, entry_name
from nntrain.layers.base import LAYER_TYPES, Built, Layer, ShapeError, Weight, as_float, register
from nntrain.lazy import jax, jnp


def _dropout_mask(rng: jax.Array, rate: float, shape: tuple[int, ...], dtype) -> jax.Array:
    keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
    return (keep / (1.0 - rate)).astype(dtype)


class Recurrent(Layer):
    """The time loop shared by the three layers; `step` is the cell."""

    gates: ClassVar[int] = 1  # blocks of `units` columns in the kernels
    carries_cell: ClassVar[bool] = False  # LSTM carries (h, c)

    @property
    def activation(self) -> None:
        """None: the activation is applied inside each step, never after the layer (so a
        cross-entropy never takes it for the output's softmax)."""
        return None

    def bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.args.units,)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ShapeError(f"{self.type_name} takes sequences of shape (timesteps, features); "
                             f"got examples of shape {tuple(input_shape)} (a reshape layer "
                             "before it can make them)")
        a = self.args
        columns = self.gates * a.units
        params = {
            "kernel": Weight((input_shape[-1], columns), a.kernel_initializer,
                             regularizer=a.kernel_regularizer, constraint=a.kernel_constraint),
            "recurrent_kernel": Weight((a.units, columns), a.recurrent_initializer,
                                       regularizer=a.recurrent_regularizer,
                                       constraint=a.recurrent_constraint),
        }
        if a.use_bias:
            params["bias"] = Weight(self.bias_shape(), a.bias_initializer,
                                    regularizer=a.bias_regularizer, constraint=a.bias_constraint)
        shape = (input_shape[0], a.units) if a.return_sequences else (a.units,)
        return Built(params, {}, shape)

    def input_projection(self, params, x):
        """Every step's kernel product (and input bias), for all steps at once."""
        z = x @ params["kernel"]
        return z + params["bias"] if "bias" in params else z

    def step(self, params, carry, z, recurrent_mask):
        """One step: the new carry (its first part is the step's output) from the carry and
        the step's projected input."""
        raise NotImplementedError

    def call(self, params, state, x, *, training, rng, **_):
        a = self.args
        x = as_float(x)
        if a.go_backwards:  # Keras returns the outputs in this reversed order too
            x = jnp.flip(x, axis=1)
        batch = x.shape[0]
        dropping = training and rng is not None
        if dropping and a.dropout > 0.0:
            mask = _dropout_mask(jax.random.fold_in(rng, 0), a.dropout,
                                 (batch, x.shape[-1]), x.dtype)
            x = x * mask[:, None, :]
        z = self.input_projection(params, x)
        h = jnp.zeros((batch, a.units), z.dtype)
        carry = (h, h) if self.carries_cell else h
        recurrent_mask = None
        if dropping and a.recurrent_dropout > 0.0:
            recurrent_mask = _dropout_mask(jax.random.fold_in(rng, 1), a.recurrent_dropout,
                                           (batch, a.units), z.dtype)

        def scan_step(carry, z_t):
            carry = self.step(params, carry, z_t, recurrent_mask)
            h = carry[0] if self.carries_cell else carry
            return carry, (h if a.return_sequences else None)

        carry, outputs = jax.lax.scan(scan_step, carry, jnp.swapaxes(z, 0, 1),
                                      unroll=bool(a.unroll))
        if a.return_sequences:
            return jnp.swapaxes(outputs, 0, 1), state
        return (carry[0] if self.carries_cell else carry), state


def _forget_bias_one(name: str, units: int):
    """Keras's LSTM bias with unit_forget_bias: `name` for the i, c and o blocks, ones for f."""

    def init(key, shape, dtype):
        base = initializers.get(name)  # here, not in build: reading a config needs no JAX
        first, rest = jax.random.split(key)
        return jnp.concatenate([base(first, (units,), dtype), jnp.ones((units,), dtype),
                                base(rest, (2 * units,), dtype)])

    return init


def _masked(h, mask):
    return h if mask is None else h * mask


@register("simple_rnn")
class SimpleRNN(Recurrent):
    """`h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)`."""

    def step(self, params, h, z, recurrent_mask):
        return activations.get(self.args.activation)(
            z + _masked(h, recurrent_mask) @ params["recurrent_kernel"])


@register("lstm")
class LSTM(Recurrent):
    """Gates in Keras's order i, f, c, o: `c_t = f * c_{t-1} + i * activation(.)`,
    `h_t = o * activation(c_t)`. With `unit_forget_bias` the forget gate's bias starts at 1."""

    gates = 4
    carries_cell = True

    def build(self, input_shape):
        built = super().build(input_shape)
        a = self.args
        if a.use_bias and a.unit_forget_bias:
            bias = built.params["bias"]
            built.params["bias"] = Weight(bias.shape, _forget_bias_one(a.bias_initializer, a.units),
                                          regularizer=bias.regularizer, constraint=bias.constraint)
        return built

    def step(self, params, carry, z, recurrent_mask):
        h, c = carry
        a = self.args
        z = z + _masked(h, recurrent_mask) @ params["recurrent_kernel"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        gate, act = activations.get(a.recurrent_activation), activations.get(a.activation)
        c = gate(f) * c + gate(i) * act(g)
        return gate(o) * act(c), c


@register("gru")
class GRU(Recurrent):
    """Gates in Keras's order z (update), r (reset), h: `h_t = z * h_{t-1} + (1 - z) * hh`.
    With `reset_after` (Keras's default) the reset gate multiplies the recurrent product, and
    the bias has two rows, for the input and the recurrent products."""

    gates = 3

    def bias_shape(self):
        columns = 3 * self.args.units
        return (2, columns) if self.args.reset_after else (columns,)

    def input_projection(self, params, x):
        z = x @ params["kernel"]
        if "bias" not in params:
            return z
        return z + (params["bias"][0] if self.args.reset_after else params["bias"])

    def step(self, params, h, x, recurrent_mask):
        a = self.args
        units = a.units
        gate, act = activations.get(a.recurrent_activation), activations.get(a.activation)
        kernel = params["recurrent_kernel"]
        hm = _masked(h, recurrent_mask)
        x_z, x_r, x_h = jnp.split(x, 3, axis=-1)
        if a.reset_after:
            inner = hm @ kernel
            if "bias" in params:
                inner = inner + params["bias"][1]
            r_z, r_r, r_h = jnp.split(inner, 3, axis=-1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            hh = act(x_h + r * r_h)
        else:
            r_z, r_r = jnp.split(hm @ kernel[:, :2 * units], 2, axis=-1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            hh = act(x_h + (r * hm) @ kernel[:, 2 * units:])
        return z * h + (1.0 - z) * hh


@register("bidirectional")
class Bidirectional(Layer):
    """Keras's Bidirectional: `forward_*` weights read the sequence first step first,
    `backward_*` weights (a copy of the layer with `go_backwards` flipped) last step first;
    with `return_sequences` the backward outputs are put back in time order before the two
    are merged (`concat` on the last axis, `sum`, `mul` or `ave`)."""

    def __init__(self, args) -> None:
        super().__init__(args)
        inner, kind = entry_args(args.layer), LAYER_TYPES[entry_name(args.layer)]
        self.forward = kind(inner)
        self.backward = kind(inner.model_copy(update={"go_backwards": not inner.go_backwards}))

    @property
    def activation(self) -> None:
        return None

    def build(self, input_shape):
        forward, backward = self.forward.build(input_shape), self.backward.build(input_shape)
        params = {**{f"forward_{k}": w for k, w in forward.params.items()},
                  **{f"backward_{k}": w for k, w in backward.params.items()}}
        shape = forward.output_shape
        if self.args.merge_mode == "concat":
            shape = (*shape[:-1], 2 * shape[-1])
        return Built(params, {}, shape)

    def call(self, params, state, x, *, training, rng, **_):
        outputs = []
        for i, (prefix, layer) in enumerate((("forward_", self.forward),
                                             ("backward_", self.backward))):
            own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            y, _ = layer.call(own, {}, x, training=training,
                              rng=None if rng is None else jax.random.fold_in(rng, i))
            outputs.append(y)
        forward, backward = outputs
        if self.forward.args.return_sequences:
            backward = jnp.flip(backward, axis=1)
        mode = self.args.merge_mode
        if mode == "concat":
            return jnp.concatenate([forward, backward], axis=-1), state
        if mode == "sum":
            return forward + backward, state
        if mode == "mul":
            return forward * backward, state
        return (forward + backward) / 2, state
