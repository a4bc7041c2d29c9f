"""Convolutions over channels-last inputs: conv1d (steps, channels), conv2d (h, w, channels),
conv3d (d, h, w, channels), their transposes, depthwise_conv2d and separable_conv2d.

Kernels are laid out like Keras's, (kh, kw, in / groups, filters) and for the transposes (kh,
kw, filters, in), so weights and parameter counts line up with a Keras model's.
"""

from __future__ import annotations

from nntrain.layers.base import Built, Layer, Shape, ShapeError, Weight, register
from nntrain.lazy import lax

SPATIAL_AXES = {1: "steps", 2: "height, width", 3: "depth, height, width"}


def check_rank(layer: Layer, shape: Shape, rank: int) -> None:
    """A channels-last layer's examples: `rank` spatial axes, then the channels."""
    if len(shape) != rank + 1:
        raise ShapeError(f"{layer.type_name} takes {rank + 1}-d examples "
                         f"({SPATIAL_AXES[rank]}, channels)")


def as_tuple(size: int | list[int], rank: int) -> tuple[int, ...]:
    """Keras's int-or-tuple sizes: an int applies to every spatial axis."""
    return (size,) * rank if isinstance(size, int) else tuple(size)


def window_output_size(size: int, window: int, stride: int, padding: str,
                       dilation: int = 1) -> int:
    """Keras's output length along one axis; `same` (and conv1d's `causal`) pad so that only
    the stride shrinks it."""
    if padding in ("same", "causal"):
        return -(-size // stride)
    return -(-(size - (window - 1) * dilation) // stride)


def spatial_output_shape(spatial: Shape, window: tuple[int, ...], strides: tuple[int, ...],
                         padding: str, dilation: tuple[int, ...] | None = None) -> Shape:
    dilation = dilation or (1,) * len(spatial)
    out = tuple(window_output_size(n, k, s, padding, d)
                for n, k, s, d in zip(spatial, window, strides, dilation, strict=True))
    if min(out) < 1:
        dilated = "" if max(dilation) == 1 else f" dilated by {dilation}"
        raise ShapeError(f"window {window}{dilated} does not fit {spatial} with padding 'valid'")
    return out


class Conv(Layer):
    """`activation(conv(x, kernel) + bias)`, lax's convolution with Keras's arguments."""

    rank: int
    dimension_numbers: tuple[str, str, str]

    def _sizes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        a = self.args
        return (as_tuple(a.kernel_size, self.rank), as_tuple(a.strides, self.rank),
                as_tuple(a.dilation_rate, self.rank))

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank)
        groups = self.args.groups
        if input_shape[-1] % groups:
            raise ShapeError(f"{input_shape[-1]} input channels do not split into {groups} "
                             f"groups: give groups that divide the channels")
        kernel_size, strides, dilation = self._sizes()
        spatial = spatial_output_shape(input_shape[:-1], kernel_size, strides, self.args.padding,
                                       dilation)
        kernel = (*kernel_size, input_shape[-1] // groups, self.args.filters)
        return Built(self._weights(kernel), {}, (*spatial, self.args.filters))

    def _weights(self, kernel_shape: tuple[int, ...]) -> dict[str, Weight]:
        a = self.args
        params = {"kernel": Weight(kernel_shape, a.kernel_initializer,
                                   regularizer=a.kernel_regularizer,
                                   constraint=a.kernel_constraint)}
        if a.use_bias:
            params["bias"] = Weight((a.filters,), a.bias_initializer,
                                    regularizer=a.bias_regularizer, constraint=a.bias_constraint)
        return params

    def call(self, params, state, x, *, training, rng, **_):
        kernel = params["kernel"]
        kernel_size, strides, dilation = self._sizes()
        padding = self.args.padding.upper()
        if padding == "CAUSAL":  # all of the padding before the first step
            padding = [((kernel_size[0] - 1) * dilation[0], 0)]
        y = lax.conv_general_dilated(
            x.astype(kernel.dtype), kernel, window_strides=strides,
            padding=padding, rhs_dilation=dilation,
            dimension_numbers=self.dimension_numbers,
            feature_group_count=self.args.groups,
        )
        if "bias" in params:
            y = y + params["bias"]
        return y, state


@register("conv1d")
class Conv1D(Conv):
    rank = 1
    dimension_numbers = ("NWC", "WIO", "NWC")


@register("conv2d")
class Conv2D(Conv):
    rank = 2
    dimension_numbers = ("NHWC", "HWIO", "NHWC")


@register("conv3d")
class Conv3D(Conv):
    rank = 3
    dimension_numbers = ("NDHWC", "DHWIO", "NDHWC")


def transpose_output_size(size: int, kernel: int, stride: int, padding: str,
                          output_padding: int | None, dilation: int) -> int:
    """Keras's deconv_output_length: a transposed convolution's output length on one axis."""
    kernel = (kernel - 1) * dilation + 1
    if output_padding is None:
        return size * stride + (max(kernel - stride, 0) if padding == "valid" else 0)
    pad = kernel // 2 if padding == "same" else 0
    return (size - 1) * stride + kernel - 2 * pad + output_padding


def transpose_padding(kernel: int, stride: int, padding: str, output_padding: int | None,
                      dilation: int) -> tuple[int, int]:
    """The (before, after) padding lax.conv_transpose needs for Keras's output length (Keras's
    JAX backend works it out the same way)."""
    kernel = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(kernel, stride) - kernel if output_padding is None else output_padding
        return kernel - 1, kernel - 1 + extra
    total = stride + kernel - 2 if output_padding is None \
        else kernel + kernel % 2 - 2 + output_padding
    before = min(total // 2 + total % 2, kernel - 1)
    return before, total - before


class ConvTranspose(Conv):
    def _output_padding(self) -> tuple[int | None, ...]:
        given = self.args.output_padding
        return (None,) * self.rank if given is None else as_tuple(given, self.rank)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank)
        kernel_size, strides, dilation = self._sizes()
        a = self.args
        spatial = tuple(transpose_output_size(n, k, s, a.padding, p, d) for n, k, s, p, d in zip(
            input_shape[:-1], kernel_size, strides, self._output_padding(), dilation,
            strict=True))
        return Built(self._weights((*kernel_size, a.filters, input_shape[-1])), {},
                     (*spatial, a.filters))

    def call(self, params, state, x, *, training, rng, **_):
        kernel = params["kernel"]
        kernel_size, strides, dilation = self._sizes()
        padding = [transpose_padding(k, s, self.args.padding, p, d) for k, s, p, d in zip(
            kernel_size, strides, self._output_padding(), dilation, strict=True)]
        # (kh, kw, filters, in) read as HWIO and transposed: in -> filters, flipped in space
        y = lax.conv_transpose(x.astype(kernel.dtype), kernel, strides, padding,
                               rhs_dilation=dilation,
                               dimension_numbers=self.dimension_numbers,
                               transpose_kernel=True)
        if "bias" in params:
            y = y + params["bias"]
        return y, state


# conv1d_transpose is ConvTranspose with conv1d's rank and layouts, and so on
for _conv in (Conv1D, Conv2D, Conv3D):
    register(f"conv{_conv.rank}d_transpose")(type(
        f"{_conv.__name__}Transpose", (ConvTranspose,),
        {"rank": _conv.rank, "dimension_numbers": _conv.dimension_numbers}))


@register("depthwise_conv2d")
class DepthwiseConv2D(Conv2D):
    """Each input channel convolved by its own `depth_multiplier` filters: `kernel` (kh, kw,
    in, depth_multiplier), output channels in*depth_multiplier, channel c's filters first."""

    kernel_name = "kernel"  # Keras's names: DepthwiseConv2D's kernel, SeparableConv2D's
    # depthwise_kernel

    def _depthwise_weights(self, input_shape: Shape) -> tuple[dict[str, Weight], Shape]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self.type_name} takes 3-d examples (height, width, channels)")
        kernel_size, strides, dilation = self._sizes()
        a = self.args
        spatial = spatial_output_shape(input_shape[:-1], kernel_size, strides, a.padding,
                                       dilation)
        kernel = Weight((*kernel_size, input_shape[-1], a.depth_multiplier),
                        a.depthwise_initializer, regularizer=a.depthwise_regularizer,
                        constraint=a.depthwise_constraint)
        return {self.kernel_name: kernel}, (*spatial, input_shape[-1] * a.depth_multiplier)

    def _bias(self, filters: int) -> dict[str, Weight]:
        a = self.args
        return {"bias": Weight((filters,), a.bias_initializer, regularizer=a.bias_regularizer,
                               constraint=a.bias_constraint)} if a.use_bias else {}

    def build(self, input_shape):
        params, shape = self._depthwise_weights(input_shape)
        return Built({**params, **self._bias(shape[-1])}, {}, shape)

    def _depthwise(self, params, x):
        kernel = params[self.kernel_name]
        _, strides, dilation = self._sizes()
        channels = kernel.shape[-2]
        # Keras's JAX backend: (kh, kw, 1, in * multiplier), one group per input channel
        grouped = kernel.reshape(*kernel.shape[:-2], 1, channels * kernel.shape[-1])
        return lax.conv_general_dilated(
            x.astype(kernel.dtype), grouped, window_strides=strides,
            padding=self.args.padding.upper(), rhs_dilation=dilation,
            dimension_numbers=self.dimension_numbers, feature_group_count=channels)

    def call(self, params, state, x, *, training, rng, **_):
        y = self._depthwise(params, x)
        return (y + params["bias"] if "bias" in params else y), state


@register("separable_conv2d")
class SeparableConv2D(DepthwiseConv2D):
    """A depthwise convolution, then a 1x1 convolution to `filters` channels: kernels
    `depthwise_kernel` (kh, kw, in, depth_multiplier) and `pointwise_kernel` (1, 1,
    in * depth_multiplier, filters)."""

    kernel_name = "depthwise_kernel"

    def build(self, input_shape):
        a = self.args
        params, shape = self._depthwise_weights(input_shape)
        params["pointwise_kernel"] = Weight((1, 1, shape[-1], a.filters),
                                            a.pointwise_initializer,
                                            regularizer=a.pointwise_regularizer,
                                            constraint=a.pointwise_constraint)
        return Built({**params, **self._bias(a.filters)}, {}, (*shape[:-1], a.filters))

    def call(self, params, state, x, *, training, rng, **_):
        y = self._depthwise(params, x)
        y = lax.conv_general_dilated(y, params["pointwise_kernel"], (1, 1), "VALID",
                                     dimension_numbers=self.dimension_numbers)
        return (y + params["bias"] if "bias" in params else y), state
