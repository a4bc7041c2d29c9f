"""Keras's weight regularizers and constraints, as functions of one weight.

A regularizer's penalty is added to the loss (to the reported `loss` and `val_loss` too, as in
Keras); a constraint maps a weight to its allowed set after every optimizer update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nntrain.config.entries import entry_args, entry_name
from nntrain.config.layers import CONSTRAINTS, REGULARIZERS, Constraint, Regularizer
from nntrain.layers.base import ShapeError, Weight
from nntrain.lazy import jax, jnp

EPSILON = 1e-7  # Keras's backend.epsilon(), in its norm constraints

WeightFn = Callable[["jax.Array"], "jax.Array"]


def checked(weight: Weight, where: str, node_index: int | None) -> Weight:
    """`weight` with its regularizer and constraint as validated entries: a custom layer may
    give them as a config writes them (`"l2"`, `{"max_norm": 3}`)."""
    from pydantic import BaseModel, TypeAdapter, ValidationError

    changes = {}
    for field, kind in (("regularizer", Regularizer), ("constraint", Constraint)):
        value = getattr(weight, field)
        if value is None or isinstance(value, BaseModel):
            continue
        try:
            changes[field] = TypeAdapter(kind).validate_python(value)
        except ValidationError:
            registry = REGULARIZERS if field == "regularizer" else CONSTRAINTS
            raise ShapeError(f"{where} {field} {value!r} is not one of "
                             f"{', '.join(registry.args)} (or one of them mapped to its "
                             "arguments)", node_index) from None
    return dataclasses.replace(weight, **changes) if changes else weight


def penalty(entry: Any) -> WeightFn:
    """`l1 * sum(|w|) + l2 * sum(w**2)`: l1, l2 and l1_l2 are the same sum with one factor
    0; or Keras's orthogonal regularizer."""
    args = entry_args(entry)
    if REGULARIZERS.canonical(entry_name(entry)) == "orthogonal_regularizer":
        return _orthogonal(args.factor, args.mode == "rows")
    l1, l2 = getattr(args, "l1", 0.0), getattr(args, "l2", 0.0)

    def apply(w: jax.Array) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        if l1:
            total = total + l1 * jnp.sum(jnp.abs(w))
        if l2:
            total = total + l2 * jnp.sum(jnp.square(w))
        return total

    return apply


def _orthogonal(factor: float, rows: bool) -> WeightFn:
    def apply(w: jax.Array) -> jax.Array:
        w = w if rows else w.T
        w = w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), EPSILON)
        size = w.shape[0]
        off_diagonal = (w @ w.T) * (1.0 - jnp.eye(size, dtype=w.dtype))
        return factor * 0.5 * jnp.sum(jnp.abs(off_diagonal)) / (size * (size - 1) / 2)

    return apply


def shape_problem(entry: Any, shape: tuple[int, ...]) -> str | None:
    """Why a regularizer cannot take a weight (or an example's output) of `shape`, if so:
    the orthogonal one needs a matrix with at least two rows (columns) to compare."""
    if REGULARIZERS.canonical(entry_name(entry)) != "orthogonal_regularizer":
        return None
    if len(shape) != 2:
        return f"orthogonal_regularizer takes a 2-d weight, not shape {shape}"
    mode = entry_args(entry).mode
    if shape[0 if mode == "rows" else 1] < 2:
        return f"orthogonal_regularizer needs at least 2 {mode} to compare, shape {shape}"
    return None


def constraint(entry: Any) -> WeightFn:
    name, args = CONSTRAINTS.canonical(entry_name(entry)), entry_args(entry)
    if name == "non_neg":
        return lambda w: w * (w >= 0).astype(w.dtype)
    axis = tuple(args.axis) if isinstance(args.axis, list) else args.axis

    def norms(w: jax.Array) -> jax.Array:
        return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))

    if name == "unit_norm":
        return lambda w: w / (EPSILON + norms(w))
    if name == "max_norm":
        def desired(n: jax.Array) -> jax.Array:
            return jnp.clip(n, 0.0, args.max_value)
    else:  # min_max_norm: `rate` of the way from the norm to its clipped value
        def desired(n: jax.Array) -> jax.Array:
            return args.rate * jnp.clip(n, args.min_value, args.max_value) + \
                (1.0 - args.rate) * n

    def apply(w: jax.Array) -> jax.Array:
        n = norms(w)
        return w * (desired(n) / (EPSILON + n))

    return apply


def constraint_axes(entry: Any) -> list[int]:
    """The weight axes a constraint reduces over (none for non_neg), for a shape check."""
    axis = getattr(entry_args(entry), "axis", [])
    return axis if isinstance(axis, list) else [axis]
