"""Layers that reshape examples: Keras's RepeatVector and Permute, and those that resize the
spatial axes of channels-last inputs, UpSampling1D/2D/3D, ZeroPadding1D/2D/3D and
Cropping1D/2D/3D."""

from __future__ import annotations

from nntrain.layers.base import Layer, ShapeError, as_float, register
from nntrain.layers.conv import as_tuple, check_rank
from nntrain.lazy import jax, jnp


def ends(amount, rank: int) -> tuple[tuple[int, int], ...]:
    """Keras's padding or cropping amounts as (before, after) for each spatial axis."""
    if isinstance(amount, int):
        return ((amount, amount),) * rank
    if rank == 1:
        return (tuple(amount),)
    return tuple((a, a) if isinstance(a, int) else tuple(a) for a in amount)


@register("repeat_vector")
class RepeatVector(Layer):
    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ShapeError(f"it takes vectors, (features,); got {tuple(input_shape)}")
        return (self.args.n, input_shape[0])

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.repeat(x[:, None, :], self.args.n, axis=1), state


@register("permute")
class Permute(Layer):
    def output_shape(self, input_shape):
        dims = self.args.dims
        if sorted(dims) != list(range(1, len(input_shape) + 1)):
            raise ShapeError(f"dims {dims} must order the axes 1..{len(input_shape)} (the "
                             "batch's is 0), each once")
        return tuple(input_shape[d - 1] for d in dims)

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.transpose(x, (0, *self.args.dims)), state


class UpSampling(Layer):
    rank: int

    def _size(self) -> tuple[int, ...]:
        return as_tuple(self.args.size, self.rank)

    def output_shape(self, input_shape):
        check_rank(self, input_shape, self.rank)
        return (*(n * s for n, s in zip(input_shape[:-1], self._size(), strict=True)),
                input_shape[-1])

    def call(self, params, state, x, *, training, rng, **_):
        method = getattr(self.args, "interpolation", "nearest")
        if method != "nearest":
            shape = (x.shape[0], *self.output_shape(x.shape[1:]))
            return jax.image.resize(as_float(x), shape, method, antialias=False), state
        for axis, size in enumerate(self._size(), start=1):
            x = jnp.repeat(x, size, axis=axis)
        return x, state


class ZeroPadding(Layer):
    rank: int

    def output_shape(self, input_shape):
        check_rank(self, input_shape, self.rank)
        pads = ends(self.args.padding, self.rank)
        return (*(n + a + b for n, (a, b) in zip(input_shape[:-1], pads, strict=True)),
                input_shape[-1])

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.pad(x, ((0, 0), *ends(self.args.padding, self.rank), (0, 0))), state


class Cropping(Layer):
    rank: int

    def output_shape(self, input_shape):
        check_rank(self, input_shape, self.rank)
        cuts = ends(self.args.cropping, self.rank)
        out = tuple(n - a - b for n, (a, b) in zip(input_shape[:-1], cuts, strict=True))
        if min(out) < 1:
            raise ShapeError(f"cropping {self.args.cropping} leaves nothing of {input_shape[:-1]}")
        return (*out, input_shape[-1])

    def call(self, params, state, x, *, training, rng, **_):
        cuts = ends(self.args.cropping, self.rank)
        index = tuple(slice(a, n - b) for n, (a, b) in zip(x.shape[1:-1], cuts, strict=True))
        return x[(slice(None), *index)], state


# `up_sampling1d` is UpSampling with rank 1, and so on
for _rank in (1, 2, 3):
    for _name, _base in (("up_sampling", UpSampling), ("zero_padding", ZeroPadding),
                         ("cropping", Cropping)):
        register(f"{_name}{_rank}d")(type(f"{_base.__name__}{_rank}D", (_base,), {"rank": _rank}))
