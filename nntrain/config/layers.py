"""What a user may write for each layer: Keras's argument names and defaults."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PositiveInt

from nntrain.config.entries import Args, Registry

LAYERS = Registry("layer")

ActivationName = Literal[
    "linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu",
    "gelu", "swish", "silu", "leaky_relu", "relu6", "hard_sigmoid", "exponential", "log_softmax",
]
InitializerName = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
    "lecun_normal", "zeros", "ones", "random_normal", "random_uniform", "truncated_normal",
    "orthogonal",
]
NodeName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _number(value: object) -> object:
    """Accept `1/255` as well as `0.00392...`: YAML has no fractions, configs want them."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            return value
    return value


Number = Annotated[float, BeforeValidator(_number)]


class LayerArgs(Args):
    """Arguments every layer takes: its node name and (in graph models) where its input comes
    from. Without `inputs`, a layer takes the node listed before it."""

    name: NodeName | None = None
    inputs: NodeName | list[NodeName] | None = None


@LAYERS.register("flatten")
class FlattenArgs(LayerArgs):
    pass


@LAYERS.register("dense")
class DenseArgs(LayerArgs):
    positional = "units"
    units: PositiveInt
    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: InitializerName = "glorot_uniform"
    bias_initializer: InitializerName = "zeros"


@LAYERS.register("activation")
class ActivationArgs(LayerArgs):
    positional = "activation"
    activation: ActivationName


@LAYERS.register("dropout")
class DropoutArgs(LayerArgs):
    positional = "rate"
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]


@LAYERS.register("rescaling")
class RescalingArgs(LayerArgs):
    """Keras's Rescaling: `x * scale + offset`. Keeps raw pixels (uint8) as the model's input,
    so data stays small on the device and `predict` takes images as they are."""

    positional = "scale"
    scale: Number
    offset: Number = 0.0


@LAYERS.register("reshape")
class ReshapeArgs(LayerArgs):
    positional = "target_shape"
    target_shape: list[int] = Field(min_length=1)
