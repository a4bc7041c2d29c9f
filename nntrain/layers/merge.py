"""Layers that merge several inputs: concatenate, and element-wise add, subtract, multiply,
average, maximum, minimum. They join the branches of a graph model."""

from __future__ import annotations

import functools

from nntrain.layers.base import Layer, Shape, ShapeError, register
from nntrain.layers.normalization import resolve_axes
from nntrain.lazy import jax, jnp


def _fmt(shapes: list[Shape]) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def _check_count(layer: Layer, shapes: list[Shape], exactly: int | None = None) -> None:
    if exactly is not None and len(shapes) != exactly:
        raise ShapeError(f"{layer.type_name} takes exactly {exactly} inputs, got {len(shapes)}")
    if len(shapes) < 2:
        raise ShapeError(f"{layer.type_name} takes at least 2 inputs, got {len(shapes)}")


@register("concatenate")
class Concatenate(Layer):
    """Joins the inputs along `axis`; every other axis must match."""

    multi_input = True

    time_mask_mode = "keeps"  # mask_zero's masks, joining features step by step

    def time_mask_problem(self, shapes: list[Shape]) -> str | None:
        """Joining along the steps would need the masks joined too."""
        (axis,) = resolve_axes(self.args.axis, shapes[0])
        if axis != len(shapes[0]) - 1:
            return (f"joins masked sequences along axis {self.args.axis}, not their features: "
                    "that is not supported; join them on axis -1")
        return None

    def _axis(self, shapes: list[Shape]) -> int:
        _check_count(self, shapes)
        if len({len(s) for s in shapes}) > 1:
            raise ShapeError(f"inputs of different ranks: {_fmt(shapes)}")
        (axis,) = resolve_axes(self.args.axis, shapes[0])
        rest = {tuple(d for i, d in enumerate(s) if i != axis) for s in shapes}
        if len(rest) > 1:
            raise ShapeError(f"shapes {_fmt(shapes)} differ outside the concatenation axis "
                             f"{self.args.axis}")
        return axis

    def output_shape(self, input_shape):
        shapes = list(input_shape)
        axis = self._axis(shapes)
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def call(self, params, state, x, *, training, rng, **_):
        axis = self._axis([a.shape[1:] for a in x])
        return jnp.concatenate(x, axis=axis + 1), state


class ElementWise(Layer):
    """Combines inputs of one shape, element by element."""

    multi_input = True
    arity: int | None = None  # None: any number from 2
    time_mask_mode = "keeps"  # mask_zero's masks: the steps any of them keeps, as Keras 3
    # Keras's multiply, maximum and minimum skip each input's masked steps
    mask_values_matter = False

    def output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        _check_count(self, shapes, self.arity)
        if len(set(shapes)) > 1:
            raise ShapeError(f"{self.type_name} needs inputs of one shape, got {_fmt(shapes)}")
        return shapes[0]

    def call(self, params, state, x, *, training, rng, **_):
        return self.combine(x), state

    def combine(self, x: list) -> jax.Array:
        raise NotImplementedError


def _fold(op: str):
    """`combine` folding the inputs with jax.numpy's `op` (looked up when called)."""
    return lambda self, x: functools.reduce(getattr(jnp, op), x)


@register("add")
class Add(ElementWise):
    combine = _fold("add")


@register("subtract")
class Subtract(ElementWise):
    arity = 2
    combine = _fold("subtract")


@register("multiply")
class Multiply(ElementWise):
    mask_values_matter = True
    combine = _fold("multiply")


@register("average")
class Average(ElementWise):
    def combine(self, x):
        return functools.reduce(jnp.add, x) / len(x)


@register("maximum")
class Maximum(ElementWise):
    mask_values_matter = True
    combine = _fold("maximum")


@register("minimum")
class Minimum(ElementWise):
    mask_values_matter = True
    combine = _fold("minimum")
