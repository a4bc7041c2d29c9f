"""What a user may write for each layer: Keras's argument names and defaults."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)

from nntrain.config.entries import Args, CustomEntry, Registry, entry_args, entry_name

LAYERS = Registry("layer")

ActivationName = Literal[
    "linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu",
    "gelu", "swish", "silu", "leaky_relu", "relu6", "hard_sigmoid", "exponential", "log_softmax",
    "mish", "celu", "hard_silu", "hard_swish", "hard_tanh", "log_sigmoid", "tanh_shrink",
    "soft_shrink", "hard_shrink", "squareplus", "sparse_plus", "sparse_sigmoid",
]
NODE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# a node, or the final state of a recurrent layer with return_state: NAME.h, and an LSTM's
# cell state NAME.c (a bidirectional layer's NAME.forward_h, NAME.backward_h, ...)
NODE_REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.((forward_|backward_)?[hc]))?$"
NodeName = Annotated[str, Field(pattern=NODE_NAME_PATTERN)]
NodeRef = Annotated[str, Field(pattern=NODE_REF_PATTERN)]
# Keras's `data_format`: channels_first takes and gives examples as (channels, ...); null is
# Keras's global default, channels_last
DataFormat = Annotated[Literal["channels_last", "channels_first"],
                       BeforeValidator(lambda v: "channels_last" if v is None else v)]


def _number(value: object) -> object:
    """Accept `1/255` (and Python's `1./255`) as well as `0.00392...`: YAML has no fractions,
    configs want them."""
    if isinstance(value, str) and value.count("/") == 1:
        numerator, denominator = value.replace(" ", "").split("/")
        try:
            return float(Fraction(numerator) / Fraction(denominator))
        except (ValueError, ZeroDivisionError, OverflowError):
            return value
    return value


Number = Annotated[float, BeforeValidator(_number)]


# Keras's axis: counts the batch axis as 0, so -1 and (for a 3-d input) 3 are the same.
Axis = int | list[int]


# -- weight penalties and constraints: Keras's regularizers and constraints ------------------
REGULARIZERS = Registry("regularizer")
CONSTRAINTS = Registry("constraint")
Factor = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


@REGULARIZERS.register("l1")
class L1Args(Args):
    """`l1 * sum(|w|)`, added to the loss."""

    positional = "l1"
    l1: Factor = 0.01


@REGULARIZERS.register("l2")
class L2Args(Args):
    """`l2 * sum(w**2)`, added to the loss."""

    positional = "l2"
    l2: Factor = 0.01


@REGULARIZERS.register("l1_l2", "l1l2")
class L1L2Args(Args):
    """Both penalties. Keras's L1L2() defaults both factors to 0 (and adds nothing), while its
    documentation and tf.keras's l1_l2() say 0.01: no default here, give at least one."""

    l1: Factor = 0.0
    l2: Factor = 0.0

    @model_validator(mode="after")
    def _some_penalty(self) -> L1L2Args:
        if not (self.l1 or self.l2):
            raise ValueError("give l1 or l2 (or both), e.g. {l1_l2: {l1: 0.01, l2: 0.01}}: "
                             "with both 0 it adds nothing")
        return self


@REGULARIZERS.register("orthogonal_regularizer")
class OrthogonalRegularizerArgs(Args):
    """`factor` times the mean |dot product| of a 2-d weight's unit-normalized rows (or
    columns) with each other, halved: pushes them towards orthogonal."""

    positional = "factor"
    factor: Factor = 0.01
    mode: Literal["rows", "columns"] = "rows"


class NormArgs(Args):
    """A constraint on the norms along `axis` of a weight (no batch axis here: 0 is a Dense
    kernel's inputs, so each unit's incoming weights; [0, 1, 2] for a Conv2D kernel)."""

    axis: Axis = 0


@CONSTRAINTS.register("max_norm")
class MaxNormArgs(NormArgs):
    positional = "max_value"
    max_value: Annotated[float, Field(gt=0.0)] = 2.0


@CONSTRAINTS.register("min_max_norm")
class MinMaxNormArgs(NormArgs):
    min_value: Factor = 0.0
    max_value: Factor = 1.0
    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> MinMaxNormArgs:
        if self.min_value > self.max_value:
            raise ValueError(f"min_value {self.min_value} is above max_value {self.max_value}")
        return self


@CONSTRAINTS.register("unit_norm")
class UnitNormArgs(NormArgs):
    pass


@CONSTRAINTS.register("non_neg")
class NonNegArgs(Args):
    pass


Regularizer = REGULARIZERS.entry_type()
Constraint = CONSTRAINTS.entry_type()


# -- initializers: Keras's, with its arguments and defaults -----------------------------------
INITIALIZERS = Registry("initializer", bare_defaults=True)


class SeededArgs(Args):
    """`seed`: the weight is drawn from this seed alone, the same in every run whatever the
    config's `seed` (as a seeded Keras initializer is; the values are not Keras's)."""

    seed: NonNegativeInt | None = None


class ScalingArgs(SeededArgs):
    # Keras's EinsumDense fans: accepted as Keras saves them, unset
    input_axes: None = Field(None, exclude=True)
    output_axes: None = Field(None, exclude=True)


@INITIALIZERS.register("glorot_uniform")
class GlorotUniformArgs(ScalingArgs):
    """Uniform in ±sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010); Keras's default."""


@INITIALIZERS.register("glorot_normal")
class GlorotNormalArgs(ScalingArgs):
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out))."""


@INITIALIZERS.register("he_uniform")
class HeUniformArgs(ScalingArgs):
    """Uniform in ±sqrt(6 / fan_in) (He et al. 2015): for ReLU layers."""


@INITIALIZERS.register("he_normal")
class HeNormalArgs(ScalingArgs):
    """Truncated normal with stddev sqrt(2 / fan_in)."""


@INITIALIZERS.register("lecun_uniform")
class LecunUniformArgs(ScalingArgs):
    """Uniform in ±sqrt(3 / fan_in)."""


@INITIALIZERS.register("lecun_normal")
class LecunNormalArgs(ScalingArgs):
    """Truncated normal with stddev sqrt(1 / fan_in): for SELU layers."""


@INITIALIZERS.register("variance_scaling")
class VarianceScalingArgs(ScalingArgs):
    """The family above: stddev sqrt(scale / n), n the fan `mode` names."""

    scale: Annotated[float, Field(gt=0.0)] = 1.0
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    # as Keras reads it: any case, and `normal` for the truncated one
    distribution: Annotated[
        Literal["truncated_normal", "untruncated_normal", "uniform"],
        BeforeValidator(lambda v: "truncated_normal" if str(v).lower() == "normal"
                        else v.lower() if isinstance(v, str) else v)] = "truncated_normal"


@INITIALIZERS.register("zeros", "zero")
class ZerosArgs(Args):
    pass


@INITIALIZERS.register("ones", "one")
class OnesArgs(Args):
    pass


@INITIALIZERS.register("constant")
class ConstantArgs(Args):
    positional = "value"
    value: float = 0.0


@INITIALIZERS.register("random_normal", "normal")
class RandomNormalArgs(SeededArgs):
    mean: float = 0.0
    stddev: NonNegativeFloat = 0.05


@INITIALIZERS.register("truncated_normal")
class TruncatedNormalArgs(SeededArgs):
    """Normal, with values more than 2 stddev from the mean drawn again."""

    mean: float = 0.0
    stddev: NonNegativeFloat = 0.05


@INITIALIZERS.register("random_uniform", "uniform")
class RandomUniformArgs(SeededArgs):
    minval: float = -0.05
    maxval: float = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> RandomUniformArgs:
        if self.minval > self.maxval:
            raise ValueError(f"minval {self.minval} is above maxval {self.maxval}")
        return self


@INITIALIZERS.register("orthogonal", "orthogonal_initializer")
class OrthogonalArgs(SeededArgs):
    """An orthogonal matrix (of the weight flattened to 2 dimensions) times `gain`."""

    gain: float = 1.0


@INITIALIZERS.register("identity", "identity_initializer")
class IdentityArgs(Args):
    """`gain` times the identity matrix (ones on the diagonal of a 2-dimensional weight)."""

    gain: float = 1.0


Initializer = INITIALIZERS.entry_type()


def initializer_name(entry: Any) -> str:
    """An initializer's registered name (`he_normal` for `HeNormal`, `random_uniform` for
    `uniform`)."""
    return INITIALIZERS.canonical(entry_name(entry))


class LayerArgs(Args):
    """Arguments every layer takes: its node name and (in graph models) where its input comes
    from. Without `inputs`, a layer takes the node listed before it."""

    name: NodeName | None = None
    inputs: NodeRef | list[NodeRef] | None = None
    # a penalty on the layer's output: Keras's regularizer of the batch's outputs divided
    # by the batch size, added to the loss
    activity_regularizer: Regularizer | None = None


class CustomLayerArgs(LayerArgs):
    """Arguments of a user's layer class: open, checked by the class's own `Args` if it has
    one."""

    model_config = ConfigDict(extra="allow")


LAYERS.custom_args = CustomLayerArgs


@LAYERS.register("flatten")
class FlattenArgs(LayerArgs):
    data_format: DataFormat = "channels_last"


def _refuse_unused(args: Args, switch: str, names: tuple[str, ...]) -> None:
    """Keras ignores a regularizer or constraint of a weight its layer does not create (a
    bias with use_bias false); here that is a mistake to point out."""
    if getattr(args, switch, True):
        return
    given = [name for name in names if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{' and '.join(given)} given, but {switch} is false: that weight "
                         "does not exist")


class KernelArgs(LayerArgs):
    """Penalties (added to the loss) and constraints (applied after each update) of a layer
    with a kernel and a bias."""

    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    kernel_constraint: Constraint | None = None
    bias_constraint: Constraint | None = None

    @model_validator(mode="after")
    def _bias_exists(self) -> KernelArgs:
        _refuse_unused(self, "use_bias", ("bias_regularizer", "bias_constraint"))
        return self


@LAYERS.register("dense")
class DenseArgs(KernelArgs):
    positional = "units"
    units: PositiveInt
    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"


@LAYERS.register("activation")
class ActivationArgs(LayerArgs):
    positional = "activation"
    activation: ActivationName


@LAYERS.register("dropout")
class DropoutArgs(LayerArgs):
    positional = "rate"
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]
    # Keras's: the mask's shape, batch axis first; null takes the input's size, 1 shares one
    # draw along that axis ([null, 1, null]: the same features dropped at every step)
    noise_shape: list[PositiveInt | None] | None = Field(default=None, min_length=1)


@LAYERS.register("masking")
class MaskingArgs(LayerArgs):
    positional = "mask_value"
    mask_value: float = 0.0


# -- activation layers: Keras's ReLU, LeakyReLU, PReLU, ELU ---------------------------------
@LAYERS.register("relu", "re_lu")
class ReLUArgs(LayerArgs):
    """`x` above `threshold` (capped at `max_value`), `negative_slope * (x - threshold)`
    below it."""

    max_value: Annotated[float, Field(ge=0.0)] | None = None
    negative_slope: Annotated[float, Field(ge=0.0)] = 0.0
    threshold: Annotated[float, Field(ge=0.0)] = 0.0


@LAYERS.register("leaky_relu", "leaky_re_lu")
class LeakyReLUArgs(LayerArgs):
    positional = "negative_slope"
    negative_slope: Annotated[float, Field(ge=0.0)] = 0.3  # the layer's; the activation's 0.2


@LAYERS.register("prelu", "p_re_lu")
class PReLUArgs(LayerArgs):
    """A trained slope for negative inputs, one per input value unless `shared_axes` (1 is
    the first axis after the batch's) share it."""

    alpha_initializer: Initializer = "zeros"
    alpha_regularizer: Regularizer | None = None
    alpha_constraint: Constraint | None = None
    shared_axes: Axis | None = None


@LAYERS.register("elu")
class ELUArgs(LayerArgs):
    positional = "alpha"
    alpha: float = 1.0


# -- noise: regularizing layers that act only while training ---------------------------------
@LAYERS.register("alpha_dropout")
class AlphaDropoutArgs(LayerArgs):
    """Dropout for SELU networks: dropped values set to SELU's negative saturation, then an
    affine map keeps the mean and variance."""

    positional = "rate"
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]


@LAYERS.register("gaussian_noise")
class GaussianNoiseArgs(LayerArgs):
    positional = "stddev"
    stddev: Annotated[float, Field(ge=0.0)]


@LAYERS.register("gaussian_dropout")
class GaussianDropoutArgs(LayerArgs):
    """Multiplies by noise of mean 1 and standard deviation sqrt(rate / (1 - rate))."""

    positional = "rate"
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]


@LAYERS.register("spatial_dropout1d")
class SpatialDropout1DArgs(LayerArgs):
    """Drops whole channels (feature maps), the same ones at every step or pixel."""

    positional = "rate"
    rate: Annotated[float, Field(ge=0.0, lt=1.0)]


@LAYERS.register("spatial_dropout2d")
@LAYERS.register("spatial_dropout3d")
class SpatialDropoutArgs(SpatialDropout1DArgs):
    data_format: DataFormat = "channels_last"  # (Keras's SpatialDropout1D has none)


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
    # sizes, and at most one -1 for the size the others leave
    target_shape: list[Annotated[int, Field(ge=-1)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _sizes(self) -> ReshapeArgs:
        if 0 in self.target_shape:
            raise ValueError("a size of 0 leaves no values: give sizes of 1 or more, and "
                             "at most one -1 for the size the others leave")
        if self.target_shape.count(-1) > 1:
            raise ValueError("at most one -1 (the size the others leave) in target_shape")
        return self


# -- convolution and pooling (channels_last) -------------------------------------------------
# A size is an int for every spatial axis, or one int per axis (Keras's int-or-tuple).
Size1 = PositiveInt | Annotated[list[PositiveInt], Field(min_length=1, max_length=1)]
Size2 = PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
Size3 = PositiveInt | Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
Padding = Literal["valid", "same"]


class ConvArgs(KernelArgs):
    filters: PositiveInt
    kernel_size: Size2
    strides: Size2 = 1
    padding: Padding = "valid"
    dilation_rate: Size2 = 1
    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    data_format: DataFormat = "channels_last"

    @model_validator(mode="after")
    def _strides_or_dilation(self) -> ConvArgs:
        _refuse_strides_with_dilation(self)
        return self


def _refuse_strides_with_dilation(args: Args) -> None:
    def above_one(size: int | list[int]) -> bool:
        return any(s > 1 for s in ([size] if isinstance(size, int) else size))

    if above_one(args.strides) and above_one(args.dilation_rate):
        raise ValueError("strides > 1 cannot be combined with dilation_rate > 1 (as in Keras)")


class GroupedConvArgs(ConvArgs):
    """Keras's Conv1D/2D/3D: `groups` splits the channels into groups convolved on their
    own, each by `filters // groups` filters (ResNeXt's grouped convolutions)."""

    groups: PositiveInt = 1

    @model_validator(mode="after")
    def _filters_split_into_groups(self) -> GroupedConvArgs:
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be a multiple of groups "
                             f"({self.groups}): each group gets filters / groups of them")
        return self


@LAYERS.register("conv1d", "convolution1d")
class Conv1DArgs(GroupedConvArgs):
    kernel_size: Size1
    strides: Size1 = 1
    # causal: padded on the left only, so no step sees the steps after it (WaveNet's)
    padding: Literal["valid", "same", "causal"] = "valid"
    dilation_rate: Size1 = 1


@LAYERS.register("conv2d", "convolution2d")
class Conv2DArgs(GroupedConvArgs):
    pass


@LAYERS.register("conv3d", "convolution3d")
class Conv3DArgs(GroupedConvArgs):
    """Over (depth, height, width, channels) volumes: video clips, CT and MRI scans."""

    kernel_size: Size3
    strides: Size3 = 1
    dilation_rate: Size3 = 1


class DepthwiseConv2DArgs(LayerArgs):
    """Keras's DepthwiseConv2D: each input channel convolved on its own by
    `depth_multiplier` filters (no mixing of channels)."""

    kernel_size: Size2
    strides: Size2 = 1
    padding: Padding = "valid"
    dilation_rate: Size2 = 1
    depth_multiplier: PositiveInt = 1
    data_format: DataFormat = "channels_last"
    activation: ActivationName | None = None
    use_bias: bool = True
    depthwise_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    depthwise_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    depthwise_constraint: Constraint | None = None
    bias_constraint: Constraint | None = None

    @model_validator(mode="after")
    def _checks(self) -> DepthwiseConv2DArgs:
        _refuse_strides_with_dilation(self)
        _refuse_unused(self, "use_bias", ("bias_regularizer", "bias_constraint"))
        return self


LAYERS.register("depthwise_conv2d")(DepthwiseConv2DArgs)


@LAYERS.register("separable_conv2d", "separable_convolution2d")
class SeparableConv2DArgs(DepthwiseConv2DArgs):
    """Keras's SeparableConv2D: a depthwise convolution, then a 1x1 convolution mixing the
    channels into `filters` (Xception's, MobileNet's: far fewer weights than conv2d)."""

    filters: PositiveInt
    pointwise_initializer: Initializer = "glorot_uniform"
    pointwise_regularizer: Regularizer | None = None
    pointwise_constraint: Constraint | None = None


class ConvTransposeArgs(ConvArgs):
    """Keras's Conv1D/2D/3DTranspose: the gradient of a convolution, which grows the input by
    the strides (a decoder's or a generator's upsampling)."""

    rank: ClassVar[int] = 2
    # the output's extra steps, rows, columns past what the strides give (below the strides)
    output_padding: NonNegativeInt | list[NonNegativeInt] | None = None

    @model_validator(mode="after")
    def _output_padding_below_strides(self) -> ConvTransposeArgs:
        if self.output_padding is None:
            return self
        strides = [self.strides] * self.rank if isinstance(self.strides, int) else self.strides
        padding = [self.output_padding] * self.rank \
            if isinstance(self.output_padding, int) else self.output_padding
        if len(padding) != self.rank:
            raise ValueError(f"output_padding {self.output_padding} needs one size for each "
                             f"of the {self.rank} spatial axes, or one for all")
        if any(p >= s for p, s in zip(padding, strides, strict=True)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than "
                             f"the strides {self.strides}")
        return self


@LAYERS.register("conv1d_transpose", "convolution1d_transpose")
class Conv1DTransposeArgs(ConvTransposeArgs):
    rank: ClassVar[int] = 1
    kernel_size: Size1
    strides: Size1 = 1
    dilation_rate: Size1 = 1


@LAYERS.register("conv2d_transpose", "convolution2d_transpose")
class Conv2DTransposeArgs(ConvTransposeArgs):
    pass


@LAYERS.register("conv3d_transpose", "convolution3d_transpose")
class Conv3DTransposeArgs(ConvTransposeArgs):
    rank: ClassVar[int] = 3
    kernel_size: Size3
    strides: Size3 = 1
    dilation_rate: Size3 = 1


# -- resizing the spatial axes: Keras's UpSampling, ZeroPadding and Cropping layers ----------
Pair = Annotated[list[NonNegativeInt], Field(min_length=2, max_length=2)]
Side = NonNegativeInt | Pair  # one axis: both ends alike, or [before, after]


def _per_axis(axes: tuple[str, ...]) -> AfterValidator:
    """A list gives one entry per spatial axis (Keras's tuple of int-or-pair): checked after
    the union, so a wrong length is one message, not one per member of the union."""
    def check(value: int | list) -> int | list:
        if isinstance(value, list) and len(value) != len(axes):
            raise ValueError(f"give one int for every side, or one entry per axis "
                             f"({', '.join(axes)}), each an int or [before, after]; "
                             f"{value} has {len(value)}")
        return value
    return AfterValidator(check)


# 1-d: an int for both ends, or [before, after]; 2-d and 3-d: an int for every side, or an
# entry per axis, each an int (both its ends) or [before, after] ([[top, bottom], [left,
# right]], [1, [0, 2]], [depth, rows, columns])
Amount1 = NonNegativeInt | Pair
Amount2 = Annotated[NonNegativeInt | list[Side], _per_axis(("rows", "columns"))]
Amount3 = Annotated[NonNegativeInt | list[Side], _per_axis(("depth", "rows", "columns"))]


@LAYERS.register("repeat_vector")
class RepeatVectorArgs(LayerArgs):
    """(features,) -> (n, features): a vector repeated as a sequence (an encoder's summary
    fed to every step of a decoder)."""

    positional = "n"
    n: PositiveInt


@LAYERS.register("permute")
class PermuteArgs(LayerArgs):
    """The axes after the batch's in a new order, numbered from 1: `[2, 1]` swaps two."""

    positional = "dims"
    dims: list[PositiveInt] = Field(min_length=1)


@LAYERS.register("up_sampling1d")
class UpSampling1DArgs(LayerArgs):
    """Each step repeated `size` times."""

    positional = "size"
    size: PositiveInt = 2


@LAYERS.register("up_sampling2d")
class UpSampling2DArgs(LayerArgs):
    """Rows and columns repeated (`nearest`) or interpolated (`bilinear`, `bicubic`,
    `lanczos3`, `lanczos5`: jax.image.resize's, as Keras on JAX computes them)."""

    positional = "size"
    size: Size2 = 2
    interpolation: Annotated[
        Literal["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"],
        BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)] = "nearest"
    data_format: DataFormat = "channels_last"


@LAYERS.register("up_sampling3d")
class UpSampling3DArgs(LayerArgs):
    """Each slice, row and column repeated."""

    positional = "size"
    size: Size3 = 2
    data_format: DataFormat = "channels_last"


@LAYERS.register("zero_padding1d")
class ZeroPadding1DArgs(LayerArgs):
    positional = "padding"
    padding: Amount1 = 1
    data_format: DataFormat = "channels_last"


@LAYERS.register("zero_padding2d")
class ZeroPadding2DArgs(LayerArgs):
    positional = "padding"
    padding: Amount2 = 1
    data_format: DataFormat = "channels_last"


@LAYERS.register("zero_padding3d")
class ZeroPadding3DArgs(LayerArgs):
    positional = "padding"
    padding: Amount3 = 1
    data_format: DataFormat = "channels_last"


@LAYERS.register("cropping1d")
class Cropping1DArgs(LayerArgs):
    positional = "cropping"
    cropping: Amount1 = 1


@LAYERS.register("cropping2d")
class Cropping2DArgs(LayerArgs):
    positional = "cropping"
    cropping: Amount2 = 0
    data_format: DataFormat = "channels_last"


@LAYERS.register("cropping3d")
class Cropping3DArgs(LayerArgs):
    positional = "cropping"
    cropping: Amount3 = 1
    data_format: DataFormat = "channels_last"


class PoolArgs(LayerArgs):
    positional = "pool_size"
    pool_size: Size2 = 2
    strides: Size2 | None = None  # None: the pool size
    padding: Padding = "valid"
    data_format: DataFormat = "channels_last"


class Pool1DArgs(PoolArgs):
    pool_size: Size1 = 2
    strides: Size1 | None = None


class Pool3DArgs(PoolArgs):
    pool_size: Size3 = 2
    strides: Size3 | None = None


LAYERS.register("max_pooling1d", "max_pool1d")(Pool1DArgs)
LAYERS.register("average_pooling1d", "avg_pool1d")(Pool1DArgs)
LAYERS.register("max_pooling2d", "max_pool2d")(PoolArgs)
LAYERS.register("average_pooling2d", "avg_pool2d")(PoolArgs)
LAYERS.register("max_pooling3d", "max_pool3d")(Pool3DArgs)
LAYERS.register("average_pooling3d", "avg_pool3d")(Pool3DArgs)


class GlobalPoolArgs(LayerArgs):
    keepdims: bool = False
    data_format: DataFormat = "channels_last"


for _name, _alias in [("global_average_pooling1d", "global_avg_pool1d"),
                      ("global_average_pooling2d", "global_avg_pool2d"),
                      ("global_max_pooling1d", "global_max_pool1d"),
                      ("global_max_pooling2d", "global_max_pool2d"),
                      ("global_average_pooling3d", "global_avg_pool3d"),
                      ("global_max_pooling3d", "global_max_pool3d")]:
    LAYERS.register(_name, _alias)(GlobalPoolArgs)


# -- normalization -----------------------------------------------------------------------------
FloatOrList = Number | list[Number]


@LAYERS.register("normalization")
class NormalizationArgs(LayerArgs):
    """Standardizes with a mean and variance per index of `axis`: given, or learnt by adapt."""

    axis: Axis | None = -1  # None: one mean and variance for everything
    mean: FloatOrList | None = None
    variance: FloatOrList | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> NormalizationArgs:
        if (self.mean is None) != (self.variance is None):
            raise ValueError("give both mean and variance, or neither (to adapt them)")
        variances = self.variance if isinstance(self.variance, list) else [self.variance]
        if any(v is not None and v < 0 for v in variances):
            raise ValueError("a variance is never negative: give the square of the standard "
                             "deviation")
        return self


class ScaleCenterArgs(LayerArgs):
    gamma_regularizer: Regularizer | None = None
    beta_regularizer: Regularizer | None = None
    gamma_constraint: Constraint | None = None
    beta_constraint: Constraint | None = None

    @model_validator(mode="after")
    def _weights_exist(self) -> ScaleCenterArgs:
        _refuse_unused(self, "scale", ("gamma_regularizer", "gamma_constraint"))
        _refuse_unused(self, "center", ("beta_regularizer", "beta_constraint"))
        return self


@LAYERS.register("batch_normalization")
class BatchNormalizationArgs(ScaleCenterArgs):
    axis: Axis = -1
    momentum: Annotated[float, Field(ge=0.0, le=1.0)] = 0.99
    epsilon: Annotated[float, Field(gt=0.0)] = 1e-3
    center: bool = True
    scale: bool = True
    beta_initializer: Initializer = "zeros"
    gamma_initializer: Initializer = "ones"
    moving_mean_initializer: Initializer = "zeros"
    moving_variance_initializer: Initializer = "ones"


@LAYERS.register("layer_normalization")
class LayerNormalizationArgs(ScaleCenterArgs):
    axis: Axis = -1
    epsilon: Annotated[float, Field(gt=0.0)] = 1e-3
    center: bool = True
    scale: bool = True
    beta_initializer: Initializer = "zeros"
    gamma_initializer: Initializer = "ones"


@LAYERS.register("group_normalization")
class GroupNormalizationArgs(LayerNormalizationArgs):
    """Keras's GroupNormalization: each example's channels in `groups` groups, each group
    normalized over its channels and every other axis; -1 makes a group of each channel
    (instance normalization)."""

    positional = "groups"
    groups: Annotated[int, Field(ge=-1)] = 32
    axis: int = -1  # the channels

    @model_validator(mode="after")
    def _some_groups(self) -> GroupNormalizationArgs:
        if self.groups == 0:
            raise ValueError("groups must be positive, or -1 for a group per channel")
        return self


@LAYERS.register("unit_normalization")
class UnitNormalizationArgs(LayerArgs):
    """Keras's UnitNormalization: each example scaled to unit L2 norm over `axis`."""

    axis: Axis = -1


@LAYERS.register("softmax")
class SoftmaxArgs(LayerArgs):
    """Keras's Softmax layer: a softmax over `axis` (several axes: over them together)."""

    axis: Axis = -1


@LAYERS.register("shared")
class SharedArgs(LayerArgs):
    """Another layer called again, on this node's input, with the same weights: Keras's one
    layer object called on several inputs (a siamese encoder, a shared embedding)."""

    positional = "layer"
    layer: NodeName

    @model_validator(mode="after")
    def _no_penalty_of_its_own(self) -> SharedArgs:
        if self.activity_regularizer is not None:
            raise ValueError("a shared layer's activity_regularizer is the layer's: give it "
                             "there (it applies to each call)")
        return self


# -- merging several inputs ----------------------------------------------------------------
@LAYERS.register("concatenate")
class ConcatenateArgs(LayerArgs):
    axis: int = -1


class MergeArgs(LayerArgs):
    pass


for _name in ("add", "subtract", "multiply", "average", "maximum", "minimum"):
    LAYERS.register(_name)(MergeArgs)


# -- embedding -------------------------------------------------------------------------------
@LAYERS.register("embedding")
class EmbeddingArgs(LayerArgs):
    input_dim: PositiveInt
    output_dim: PositiveInt
    # Keras's "uniform" here is random_uniform: [-0.05, 0.05]
    embeddings_initializer: Initializer = "uniform"
    embeddings_regularizer: Regularizer | None = None
    embeddings_constraint: Constraint | None = None
    # id 0 is padding: the layers after it skip those steps (input_dim counts it: vocabulary + 1)
    mask_zero: bool = False


@LAYERS.register("position_embedding")
class PositionEmbeddingArgs(LayerArgs):
    """KerasHub's PositionEmbedding: one trained vector per position, up to sequence_length."""

    positional = "sequence_length"
    sequence_length: PositiveInt
    initializer: Initializer = "glorot_uniform"


# -- recurrent -------------------------------------------------------------------------------
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


class RecurrentArgs(KernelArgs):
    """Keras's SimpleRNN arguments, which LSTM and GRU share. Input: (timesteps, features)."""

    positional = "units"
    units: PositiveInt
    activation: ActivationName | None = "tanh"
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    recurrent_initializer: Initializer = "orthogonal"
    bias_initializer: Initializer = "zeros"
    recurrent_regularizer: Regularizer | None = None
    recurrent_constraint: Constraint | None = None
    dropout: Rate = 0.0  # of the inputs: one mask per sequence
    recurrent_dropout: Rate = 0.0  # of the carried output: one mask per sequence
    return_sequences: bool = False  # every step's output, not only the last
    go_backwards: bool = False  # read the sequence last step first
    unroll: bool = False  # the time loop unrolled: faster for short sequences, slower to compile
    # the final state too, as the nodes NAME.h (and NAME.c, an LSTM's cell state)
    return_state: bool = False
    # Keras's call argument: the state to start from instead of zeros, NAME.h (an LSTM's
    # [h, c]), e.g. an encoder's final state in a sequence-to-sequence model
    initial_state: NodeRef | list[NodeRef] | None = None
    states: ClassVar[tuple[str, ...]] = ("h",)

    @model_validator(mode="after")
    def _state_count(self) -> RecurrentArgs:
        given = self.initial_state_nodes()
        if self.initial_state == []:
            raise ValueError("initial_state is an empty list: name the state's nodes, or "
                             "leave initial_state out to start from zeros")
        if given and len(given) != len(self.states):
            names = ", ".join(f"NODE.{s}" for s in self.states)
            raise ValueError(f"initial_state: this layer's state is {len(self.states)} "
                             f"node{'s' if len(self.states) > 1 else ''} ([{names}]), "
                             f"got {len(given)}")
        return self

    def initial_state_nodes(self) -> tuple[str, ...]:
        state = self.initial_state
        return () if state is None else (state,) if isinstance(state, str) else tuple(state)

    @property
    def state_units(self) -> int:
        return self.units


RECURRENT = Registry("recurrent layer")  # what bidirectional wraps


@LAYERS.register("simple_rnn")
@RECURRENT.register("simple_rnn")
class SimpleRNNArgs(RecurrentArgs):
    pass


class GatedArgs(RecurrentArgs):
    recurrent_activation: ActivationName = "sigmoid"


@LAYERS.register("lstm")
@RECURRENT.register("lstm")
class LSTMArgs(GatedArgs):
    unit_forget_bias: bool = True  # the forget gate's bias starts at 1
    states: ClassVar[tuple[str, ...]] = ("h", "c")  # the output and the cell state


@LAYERS.register("gru")
@RECURRENT.register("gru")
class GRUArgs(GatedArgs):
    reset_after: bool = True  # Keras 2.x and 3's default (the cuDNN form)


class WrapperArgs(LayerArgs):
    """A layer that wraps another: `{lstm: 64, merge_mode: sum}` is short for
    `{layer: {lstm: 64}, merge_mode: sum}`; the wrapped layer's node name, inputs and activity
    regularizer belong to the wrapper."""

    positional = "layer"
    wrapper: ClassVar[str]  # its layer name, for messages

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        """The keys that are not the wrapper's own are the wrapped layer's entry."""
        if isinstance(value, dict) and "layer" not in value:
            wrapped = {k: v for k, v in value.items() if k not in cls.model_fields}
            if wrapped:
                return {**{k: v for k, v in value.items() if k in cls.model_fields},
                        "layer": wrapped}
        return value

    def wrapped(self) -> dict:
        """The wrapped layer's arguments, as a dict."""
        return entry_args(self.layer).model_dump()

    @model_validator(mode="after")
    def _own_arguments_outside(self) -> WrapperArgs:
        wrapped = self.wrapped()
        misplaced = [k for k in ("name", "inputs", "activity_regularizer")
                     if wrapped.get(k) is not None]
        if misplaced:
            raise ValueError(f"{' and '.join(misplaced)} of the wrapped layer: give "
                             f"{'them' if len(misplaced) > 1 else 'it'} to {self.wrapper} itself")
        inner = entry_args(self.layer)  # (a bidirectional's return_state is its layer's)
        refused = ["initial_state"] if getattr(inner, "initial_state", None) is not None else []
        if getattr(inner, "return_state", False) and self.wrapper != "bidirectional":
            refused.append("return_state")
        if refused:
            raise ValueError(f"{' and '.join(refused)} of the wrapped layer: not supported "
                             f"inside {self.wrapper}; give "
                             f"{'them' if len(refused) > 1 else 'it'} to a recurrent layer "
                             "of its own")
        return self


@LAYERS.register("bidirectional")
class BidirectionalArgs(WrapperArgs):
    """Keras's Bidirectional: the wrapped layer reads the sequence forwards, a copy of it
    (its own weights) backwards, and their outputs are merged. `bidirectional: {lstm: 64}` is
    short for `bidirectional: {layer: {lstm: 64}}`."""

    wrapper = "bidirectional"
    layer: RECURRENT.entry_type()  # type: ignore[valid-type]
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"

    @property
    def return_state(self) -> bool:
        """The wrapped layer's return_state: each direction's final state, as the nodes
        NAME.forward_h, NAME.forward_c (an LSTM's), NAME.backward_h, NAME.backward_c."""
        return entry_args(self.layer).return_state

    @property
    def states(self) -> tuple[str, ...]:
        inner = entry_args(self.layer).states
        return tuple(f"{side}_{part}" for side in ("forward", "backward") for part in inner)

    @property
    def state_units(self) -> int:
        return entry_args(self.layer).units

    @model_validator(mode="after")
    def _forwards(self) -> BidirectionalArgs:
        if self.wrapped()["go_backwards"]:
            raise ValueError("the wrapped layer has go_backwards: true; bidirectional reads "
                             "the sequence both ways itself: leave go_backwards out")
        return self


# -- attention -------------------------------------------------------------------------------
@LAYERS.register("multi_head_attention")
class MultiHeadAttentionArgs(KernelArgs):
    """Keras's MultiHeadAttention over (steps, features) sequences. One input attends to
    itself; `inputs: [query, value]` or `[query, value, key]` attend across. Keras's call
    arguments `use_causal_mask` (each step sees itself and the steps before it) and
    `sliding_window` are arguments here."""

    num_heads: PositiveInt
    key_dim: PositiveInt  # per head, for the query and the key
    value_dim: PositiveInt | None = None  # per head; key_dim if not given
    dropout: Rate = 0.0  # of the attention weights, while training
    use_bias: bool = True
    output_shape: PositiveInt | None = None  # features out; the query's if not given
    use_causal_mask: bool = False
    sliding_window: PositiveInt | None = None  # each step sees the steps fewer than this away
    # Keras's call argument: a node of (query steps, key steps), nonzero where a query step
    # may attend to a key step
    attention_mask: NodeRef | None = None
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"

    @model_validator(mode="after")
    def _no_activity_regularizer(self) -> MultiHeadAttentionArgs:
        if self.activity_regularizer is not None:
            raise ValueError("activity_regularizer is not supported here: Keras gives it to "
                             "the query, key, value and output projections inside the layer, "
                             "not to the layer's output; give it to a layer after this one")
        return self


class _AttentionArgs(LayerArgs):
    """Arguments of Keras's Attention and AdditiveAttention."""

    dropout: Rate = 0.0  # of the attention weights, while training
    use_causal_mask: bool = False  # Keras's call argument: step i sees the steps up to i


@LAYERS.register("attention")
class AttentionArgs(_AttentionArgs):
    """Keras's Attention (Luong-style): `inputs: [query, value]` or `[query, value, key]`,
    each (steps, features). Scores are query-key dot products (`score_mode: dot`) or the
    summed tanh of their sums (`concat`); `use_scale` learns a scalar that scales them."""

    use_scale: bool = False
    score_mode: Literal["dot", "concat"] = "dot"


@LAYERS.register("additive_attention")
class AdditiveAttentionArgs(_AttentionArgs):
    """Keras's AdditiveAttention (Bahdanau-style): scores are tanh(query + key) summed over
    the features, weighted by a learned vector when `use_scale`."""

    use_scale: bool = True


# -- last, so that it can wrap every layer above --------------------------------------------
@LAYERS.register("time_distributed")
class TimeDistributedArgs(WrapperArgs):
    """Keras's TimeDistributed: the wrapped layer (one set of weights) applied to each step
    of a (steps, ...) input on its own. `time_distributed: {conv2d: {filters: 8, kernel_size:
    3}}` is short for `time_distributed: {layer: {conv2d: ...}}`."""

    wrapper = "time_distributed"
    layer: LAYERS.entry_type()  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _built_in(self) -> TimeDistributedArgs:
        if isinstance(self.layer, CustomEntry):
            raise ValueError(f"time_distributed wraps nntrain's own layers, not a custom one "
                             f"({self.layer.target}): write your layer to take (batch, steps, "
                             "...) inputs instead")
        return self
