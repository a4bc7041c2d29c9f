"""The layer protocol: a layer is an init/apply pair over pytrees (like stax), with its config.

`init(rng, input_shape) -> (params, state, output_shape)` and
`apply(params, state, x, *, training, rng) -> (y, state)`. Shapes exclude the batch axis.
A layer with several inputs receives a list of shapes and a list of arrays. `params` are
trained; `state` is not (moving averages, adapted statistics).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from nntrain import activations
from nntrain.config.layers import LayerArgs

Shape = tuple[int, ...]
Params = dict[str, jax.Array]

LAYER_TYPES: dict[str, type[Layer]] = {}


class ShapeError(ValueError):
    """An input shape a layer cannot take; the model adds the node's name and index."""

    def __init__(self, message: str, node_index: int | None = None) -> None:
        super().__init__(message)
        self.node_index = node_index


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

    def __init__(self, args: LayerArgs) -> None:
        self.args = args

    @property
    def activation(self) -> str | None:
        """The activation applied last, if any: split off to fuse it with a cross-entropy."""
        return getattr(self.args, "activation", None)

    def init(self, rng: jax.Array, input_shape: Any) -> tuple[Params, Params, Shape]:
        return {}, {}, self.output_shape(input_shape)

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
