"""The layer protocol: a layer is an init/apply pair over pytrees (like stax), with its config.

`init(rng, input_shape) -> (params, state, output_shape)` and
`apply(params, state, x, *, training, rng) -> (y, state)`. Shapes exclude the batch axis.
A layer with several inputs receives a list of shapes and a list of arrays. `params` are
trained; `state` is not (moving averages, adapted statistics).

The built-in layers declare their weights in `build(input_shape)` (Keras's `build` and
`add_weight`) and `init` creates them, so shapes and parameter counts are known without JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from nntrain import activations, initializers
from nntrain.config.layers import LayerArgs
from nntrain.lazy import jax, jnp

Shape = tuple[int, ...]
Params = dict[str, Any]  # name -> jax.Array


@dataclass(frozen=True)
class Weight:
    """A weight a layer creates: its shape, the Keras initializer that fills it, its dtype,
    and the config entries of its regularizer and constraint (`nntrain.regularizers`)."""

    shape: Shape
    # an initializer entry, a Keras name, or (key, shape, dtype) -> array
    initializer: Any = "zeros"
    dtype: str = "float32"
    regularizer: Any = None
    constraint: Any = None


class Built(NamedTuple):
    params: dict[str, Weight]
    state: dict[str, Weight]
    output_shape: Shape


def create_weights(weights: dict[str, Weight], rng: jax.Array) -> Params:
    """The declared weights, each from its own key."""
    if not weights:
        return {}
    # at least two keys, as jax.random.split makes by default: a layer with one weight
    # draws it with the first of two, so a seed gives the weights it always gave
    keys = jax.random.split(rng, max(2, len(weights)))
    return {name: _initializer(w)(key, w.shape, w.dtype)
            for (name, w), key in zip(weights.items(), keys, strict=False)}


def _initializer(weight: Weight) -> Callable[..., Any]:
    return weight.initializer if callable(weight.initializer) \
        else initializers.get(weight.initializer)


LAYER_TYPES: dict[str, type[Layer]] = {}


def as_float(x: jax.Array) -> jax.Array:
    """Integer inputs (uint8 pixels) as float32; floating ones as they are."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


class ShapeError(ValueError):
    """An input shape a layer cannot take; the model adds the node's name and index."""

    def __init__(self, message: str, node_index: int | None = None) -> None:
        super().__init__(message)
        self.node_index = node_index


class ShapeErrors(ValueError):
    """Every ShapeError a model's layers raised, reported together."""

    def __init__(self, errors: list[ShapeError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def register(name: str):
    def decorate(cls: type[Layer]) -> type[Layer]:
        LAYER_TYPES[name] = cls
        cls.type_name = name
        return cls

    return decorate


class Layer:
    type_name: ClassVar[str]
    # multi-input layers (concatenate, add) take a list; the rest take one array
    multi_input: ClassVar[bool] = False
    # layers whose training statistics must skip the padding rows of the last batch
    # (batch_normalization) receive `mask`: 1.0 for real examples, 0.0 for padding
    uses_mask: ClassVar[bool] = False
    # Keras's mask over a sequence's steps (an embedding's mask_zero marks padding, id 0):
    # "keeps" passes its input's mask on (the layer works step by step), "uses" receives it
    # as `time_mask` (and `keeps_time_mask` says whether its output still has it), "drops"
    # cannot take one (the model refuses such a config rather than lose the mask)
    time_mask_mode: ClassVar[str] = "drops"

    def makes_time_mask(self) -> bool:
        return False

    def time_mask(self, x: jax.Array) -> jax.Array:
        """The mask over the steps this layer makes from its input, when makes_time_mask:
        True for the real steps."""
        raise NotImplementedError

    def keeps_time_mask(self) -> bool:
        return self.time_mask_mode == "keeps"

    def __init__(self, args: LayerArgs) -> None:
        self.args = args

    @property
    def activation(self) -> str | None:
        """The activation applied last, if any: split off to fuse it with a cross-entropy."""
        return getattr(self.args, "activation", None)

    def build(self, input_shape: Any) -> Built:
        """The weights this layer creates for `input_shape`, and its output shape; raises
        ShapeError for a shape it cannot take. Pure Python: no JAX."""
        return Built({}, {}, self.output_shape(input_shape))

    def init(self, rng: jax.Array, input_shape: Any) -> tuple[Params, Params, Shape]:
        params, state, output_shape = self.build(input_shape)
        state = create_weights(state, jax.random.fold_in(rng, 1)) if state else {}
        return create_weights(params, rng), state, output_shape

    def output_shape(self, input_shape: Any) -> Shape:
        return input_shape

    def call(self, params: Params, state: Params, x: Any, *, training: bool,
             rng: jax.Array | None, **kwargs: Any) -> tuple[jax.Array, Params]:
        """Everything but the activation."""
        raise NotImplementedError

    def apply(self, params: Params, state: Params, x: Any, *, training: bool = False,
              rng: jax.Array | None = None, **kwargs: Any) -> tuple[jax.Array, Params]:
        y, state = self.call(params, state, x, training=training, rng=rng, **kwargs)
        return activations.get(self.activation)(y), state

    # Layers that learn from the data before training (normalization) define
    # `adapt(self, state, x: np.ndarray) -> state`, called once with the whole training input
    # of the node; the result is non-trainable state, saved with the weights.


class ChannelsFirst(Layer):
    """Keras's `data_format: channels_first`: examples come in, and go out, as (channels,
    ...); the wrapped layer computes channels-last in between. Its weights are the same in
    both formats, as Keras's are, so a checkpoint does not depend on the format."""

    def __init__(self, inner: Layer) -> None:
        super().__init__(inner.args)
        self.inner = inner
        self.type_name = inner.type_name
        self.uses_mask = inner.uses_mask
        # a mask over steps comes from an embedding's (steps, features) output, which a
        # channels-first layer reads as (channels, steps): refused, not applied to channels
        self.time_mask_mode = "drops"

    @property
    def activation(self) -> str | None:
        return self.inner.activation

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ShapeError(f"data_format channels_first takes examples of (channels, ...); "
                             f"got {tuple(input_shape)}")
        last = (*input_shape[1:], input_shape[0])
        try:
            built = self.inner.build(last)
        except ShapeError as e:
            raise ShapeError(f"{e} (channels_first input {tuple(input_shape)}, seen "
                             f"channels-last as {last})") from None
        out = built.output_shape
        if len(out) == len(input_shape):  # (a global pooling or flatten drops the layout)
            out = (out[-1], *out[:-1])
        return built._replace(output_shape=out)

    def call(self, params, state, x, *, training, rng, **kwargs):
        y, state = self.inner.call(params, state, jnp.moveaxis(x, 1, -1), training=training,
                                   rng=rng, **kwargs)
        return (jnp.moveaxis(y, -1, 1) if y.ndim == x.ndim else y), state


def make_layer(kind: type[Layer], args: Any) -> Layer:
    """A layer of `kind` for its config arguments, taking channels-first examples where its
    `data_format` says so."""
    layer = kind(args)
    if getattr(args, "data_format", "channels_last") == "channels_first":
        return ChannelsFirst(layer)
    return layer
