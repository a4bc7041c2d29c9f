"""Recurrent layers: SimpleRNN, LSTM and GRU over (timesteps, features) sequences, with
Keras's equations, weight layouts, gate orders and defaults. The inputs of every step are
projected by the kernel in one matrix multiply before the time loop; the loop itself is a
`lax.scan` over the steps.

Dropout follows Keras: masks drawn once per sequence and used at every step, for the inputs
(`dropout`) and for the carried output (`recurrent_dropout`). One mask serves every gate,
except in an LSTM or GRU with `recurrent_dropout`, where (as in Keras, whose cell then switches
to its `implementation=1`) each gate draws its own input and recurrent masks.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    time_mask_mode = "uses"  # masked steps leave the carry as it was

    def keeps_time_mask(self) -> bool:
        return self.args.return_sequences

    @property
    def multi_input(self) -> bool:
        """With initial_state the layer takes [sequence, *state]."""
        return bool(self.args.initial_state_nodes())

    @property
    def activation(self) -> None:
        """None: the activation is applied inside each step, never after the layer (so a
        cross-entropy never takes it for the output's softmax)."""
        return None

    def bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.args.units,)

    def build(self, input_shape):
        a = self.args
        if self.multi_input:
            input_shape, *state_shapes = input_shape
            for node, shape in zip(a.initial_state_nodes(), state_shapes, strict=True):
                if tuple(shape) != (a.units,):
                    raise ShapeError(f"its initial_state '{node}' has examples of shape "
                                     f"{tuple(shape)}; a state of {a.units} units is "
                                     f"({a.units},)")
        if len(input_shape) != 2:
            raise ShapeError(f"{self.type_name} takes sequences of shape (timesteps, features); "
                             f"got examples of shape {tuple(input_shape)} (a reshape layer "
                             "before it can make them)")
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

    def input_bias(self, params):
        return params.get("bias")

    def input_projection(self, params, x, mask):
        """Every step's kernel product (and input bias), for all steps at once."""
        z = _project(x, mask, params["kernel"], time_axis=True)
        bias = self.input_bias(params)
        return z if bias is None else z + bias

    def step(self, params, carry, z, recurrent_mask):
        """One step: the new carry (its first part is the step's output) from the carry and
        the step's projected input."""
        raise NotImplementedError

    def dropout_masks(self, rng, batch: int, features: int, dtype):
        """The (input, recurrent) masks of a training call, each None without its dropout;
        shaped (gates, batch, n) when every gate has its own (Keras's implementation 1)."""
        a = self.args
        per_gate = (self.gates,) if self.gates > 1 and a.recurrent_dropout > 0.0 else ()
        masks = []
        for i, (rate, size) in enumerate(((a.dropout, features),
                                          (a.recurrent_dropout, a.units))):
            masks.append(None if rate == 0.0 else _dropout_mask(
                jax.random.fold_in(rng, i), rate, (*per_gate, batch, size), dtype))
        return masks

    def call(self, params, state, x, *, training, rng, time_mask=None,
             zero_masked_outputs: bool = False, with_states: bool = False, **_):
        """With `time_mask`, a masked step leaves the carry as it was and outputs the last
        step's output again (zeros with `zero_masked_outputs`, as Keras's Bidirectional
        asks of the layers it wraps). With `with_states` the output is a tuple, the output
        and then the final state (h, and an LSTM's c), as Keras's `return_state`."""
        a = self.args
        initial = None
        if self.multi_input:  # [sequence, *initial state], each with its mask (or None)
            x, *initial = x
            time_mask = None if time_mask is None else time_mask[0]
        x = as_float(x)
        if a.go_backwards:  # Keras returns the outputs in this reversed order too
            x = jnp.flip(x, axis=1)
            time_mask = None if time_mask is None else jnp.flip(time_mask, axis=1)
        batch = x.shape[0]
        input_mask = recurrent_mask = None
        if training and rng is not None:
            input_mask, recurrent_mask = self.dropout_masks(rng, batch, x.shape[-1], x.dtype)
        z = self.input_projection(params, x, input_mask)
        if initial is None:
            h = jnp.zeros((batch, a.units), z.dtype)
            carry = (h, h) if self.carries_cell else h
        else:
            initial = [as_float(v).astype(z.dtype) for v in initial]
            carry = tuple(initial) if self.carries_cell else initial[0]
        if recurrent_mask is not None:
            recurrent_mask = recurrent_mask.astype(z.dtype)

        def scan_step(carry, step):
            z_t, m_t = step
            new = self.step(params, carry, z_t, recurrent_mask)
            if m_t is not None:
                new = jax.tree.map(lambda n, o: jnp.where(m_t[:, None], n, o), new, carry)
            h = new[0] if self.carries_cell else new
            if not a.return_sequences:
                return new, None
            return new, (h if m_t is None or not zero_masked_outputs
                         else jnp.where(m_t[:, None], h, 0.0))

        steps = (jnp.swapaxes(z, 0, 1),
                 None if time_mask is None else jnp.swapaxes(time_mask.astype(bool), 0, 1))
        carry, outputs = jax.lax.scan(scan_step, carry, steps, unroll=bool(a.unroll))
        final = carry if self.carries_cell else (carry,)
        y = jnp.swapaxes(outputs, 0, 1) if a.return_sequences else final[0]
        return ((y, *final) if with_states else y), state


@register("recurrent_state")
class RecurrentState(Layer):
    """The node NAME.h (or NAME.c) of a recurrent layer with return_state: its value is
    computed by that layer (`Model.apply` calls it `with_states`); here only its shape."""

    time_mask_mode = "uses"  # a final state has no steps: no mask goes on

    def build(self, input_shape):
        return Built({}, {}, (self.args.state_units,))

    def call(self, params, state, x, *, training, rng, **_):
        raise NotImplementedError("a recurrent layer's state is computed by that layer")


def _forget_bias_one(initializer: Any, units: int):
    """Keras's LSTM bias with unit_forget_bias: `initializer` for the i, c and o blocks, ones
    for f."""

    def init(key, shape, dtype):
        base = initializers.get(initializer)  # here, not in build: reading a config needs no JAX
        first, rest = jax.random.split(key)
        return jnp.concatenate([base(first, (units,), dtype), jnp.ones((units,), dtype),
                                base(rest, (2 * units,), dtype)])

    return init


def _project(x, mask, kernel, time_axis: bool = False):
    """`x @ kernel` with x masked first: by one mask (batch, n), or with gate g's block of
    kernel columns seeing x masked by mask[g] when mask is (gates, batch, n)."""
    if mask is None:
        return x @ kernel
    if mask.ndim == 2:
        return x * (mask[:, None, :] if time_axis else mask) @ kernel
    gates = mask.shape[0]
    blocks = kernel.reshape(kernel.shape[0], gates, -1)
    if time_axis:
        z = jnp.einsum("btn,gbn,ngu->btgu", x, mask, blocks)
    else:
        z = jnp.einsum("bn,gbn,ngu->bgu", x, mask, blocks)
    return z.reshape(*z.shape[:-2], -1)


def _masked(h, mask):
    return h if mask is None else h * mask


@register("simple_rnn")
class SimpleRNN(Recurrent):
    """`h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)`."""

    def step(self, params, h, z, recurrent_mask):
        return activations.get(self.args.activation)(
            z + _project(h, recurrent_mask, params["recurrent_kernel"]))


@register("lstm")
class LSTM(Recurrent):
    """Gates in Keras's order i, f, c, o: `c_t = f * c_{t-1} + i * activation(.)`,
    `h_t = o * activation(c_t)`. With `unit_forget_bias` the forget gate's bias starts at 1."""

    gates = 4
    carries_cell = True

    def build(self, input_shape):
        built = super().build(input_shape)
        a = self.args
        # (an orthogonal bias stays as it is, for the model's "needs 2 dimensions" message)
        if a.use_bias and a.unit_forget_bias and not initializers.needs_matrix(a.bias_initializer):
            bias = built.params["bias"]
            built.params["bias"] = Weight(bias.shape, _forget_bias_one(a.bias_initializer, a.units),
                                          regularizer=bias.regularizer, constraint=bias.constraint)
        return built

    def step(self, params, carry, z, recurrent_mask):
        h, c = carry
        a = self.args
        z = z + _project(h, recurrent_mask, params["recurrent_kernel"])
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

    def input_bias(self, params):
        bias = params.get("bias")
        return bias[0] if bias is not None and self.args.reset_after else bias

    def step(self, params, h, x, recurrent_mask):
        a = self.args
        units = a.units
        gate, act = activations.get(a.recurrent_activation), activations.get(a.activation)
        kernel = params["recurrent_kernel"]
        x_z, x_r, x_h = jnp.split(x, 3, axis=-1)
        if a.reset_after:
            inner = _project(h, recurrent_mask, kernel)
            if "bias" in params:
                inner = inner + params["bias"][1]
            r_z, r_r, r_h = jnp.split(inner, 3, axis=-1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            hh = act(x_h + r * r_h)
        else:
            per_gate = recurrent_mask is not None and recurrent_mask.ndim == 3
            zr_mask = recurrent_mask[:2] if per_gate else recurrent_mask
            h_mask = recurrent_mask[2] if per_gate else recurrent_mask
            r_z, r_r = jnp.split(_project(h, zr_mask, kernel[:, :2 * units]), 2, axis=-1)
            z, r = gate(x_z + r_z), gate(x_r + r_r)
            hh = act(x_h + (r * _masked(h, h_mask)) @ kernel[:, 2 * units:])
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

    time_mask_mode = "uses"

    @property
    def activation(self) -> None:
        return None

    def keeps_time_mask(self) -> bool:
        return self.forward.args.return_sequences

    def build(self, input_shape):
        forward, backward = self.forward.build(input_shape), self.backward.build(input_shape)
        params = {**{f"forward_{k}": w for k, w in forward.params.items()},
                  **{f"backward_{k}": w for k, w in backward.params.items()}}
        shape = forward.output_shape
        if self.args.merge_mode == "concat":
            shape = (*shape[:-1], 2 * shape[-1])
        return Built(params, {}, shape)

    def call(self, params, state, x, *, training, rng, time_mask=None,
             with_states: bool = False, **_):
        """With `with_states`, the merged output and then each direction's final state, in
        Keras's order: forward h (and c), backward h (and c)."""
        outputs, states = [], []
        for i, (prefix, layer) in enumerate((("forward_", self.forward),
                                             ("backward_", self.backward))):
            own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            y, _ = layer.call(own, {}, x, training=training,
                              rng=None if rng is None else jax.random.fold_in(rng, i),
                              time_mask=time_mask, zero_masked_outputs=True,
                              with_states=with_states)
            if with_states:
                y, *final = y
                states += final
            outputs.append(y)
        merged = self._merge(*outputs)
        return ((merged, *states) if with_states else merged), state

    def _merge(self, forward, backward):
        """The two directions' outputs as one, the backward outputs back in time order."""
        if self.forward.args.return_sequences:
            backward = jnp.flip(backward, axis=1)
        mode = self.args.merge_mode
        if mode == "concat":
            return jnp.concatenate([forward, backward], axis=-1)
        if mode == "sum":
            return forward + backward
        if mode == "mul":
            return forward * backward
        return (forward + backward) / 2
