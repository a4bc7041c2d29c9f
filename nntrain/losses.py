"""Keras's losses by name, as per-example functions built on optax.

Each loss maps `(y_true, y_pred)` to one value per example (mean over the other axes, as
Keras's `sum_over_batch_size` does). A cross-entropy after a softmax/sigmoid output is computed
from the logits (log-softmax), never as log(softmax(x)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nntrain.config.compile import LOSSES
from nntrain.config.entries import Args
from nntrain.lazy import jax, jnp, optax

EPSILON = 1e-7  # Keras's backend epsilon, for losses computed from probabilities

PerExample = Callable[["jax.Array", "jax.Array"], "jax.Array"]


@dataclass(frozen=True)
class Loss:
    name: str
    fn: PerExample
    takes_logits: bool  # fn expects pre-activation values
    sparse_labels: bool = False  # targets are class indices


def _per_example(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).mean(axis=1)


def match_targets(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Targets of shape (n,) against predictions (n, 1): Keras expands the targets."""
    y_true = y_true.astype(y_pred.dtype)
    return y_true.reshape(y_pred.shape) if y_true.size == y_pred.size else y_true


def _smooth(y: jax.Array, amount: float, classes: int) -> jax.Array:
    return y * (1.0 - amount) + amount / classes if amount else y


def build_loss(name: str, args: Args, output_activation: str | None) -> Loss:
    """The loss `name` for an output whose last activation is `output_activation`."""
    name = LOSSES.canonical(name)
    from_logits = getattr(args, "from_logits", False)
    smoothing = getattr(args, "label_smoothing", 0.0)

    if name == "sparse_categorical_crossentropy":
        fused = from_logits or output_activation == "softmax"

        def sparse_ce(y, pred):
            labels = y.reshape(y.shape[0], *pred.shape[1:-1]).astype(jnp.int32)
            if fused:
                ce = optax.losses.softmax_cross_entropy_with_integer_labels(pred, labels)
            else:
                p = pred / pred.sum(-1, keepdims=True)
                p = jnp.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
                ce = -jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))
            return _per_example(ce)

        return Loss(name, sparse_ce, fused, sparse_labels=True)

    if name == "categorical_crossentropy":
        fused = from_logits or output_activation == "softmax"

        def categorical_ce(y, pred):
            y = _smooth(match_targets(y, pred), smoothing, pred.shape[-1])
            if fused:
                return _per_example(optax.losses.softmax_cross_entropy(pred, y))
            p = jnp.clip(pred / pred.sum(-1, keepdims=True), EPSILON, 1.0 - EPSILON)
            return _per_example(-(y * jnp.log(p)).sum(-1))

        return Loss(name, categorical_ce, fused)

    if name == "binary_crossentropy":
        fused = from_logits or output_activation == "sigmoid"

        def binary_ce(y, pred):
            y = _smooth(match_targets(y, pred), smoothing, 2)
            if fused:
                return _per_example(optax.losses.sigmoid_binary_cross_entropy(pred, y))
            p = jnp.clip(pred, EPSILON, 1.0 - EPSILON)
            return _per_example(-(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)))

        return Loss(name, binary_ce, fused)

    simple: dict[str, PerExample] = {
        "mean_squared_error": lambda y, p: _per_example(jnp.square(p - match_targets(y, p))),
        "mean_absolute_error": lambda y, p: _per_example(jnp.abs(p - match_targets(y, p))),
        "huber": lambda y, p: _per_example(
            optax.losses.huber_loss(p, match_targets(y, p), delta=args.delta)
        ),
        "kl_divergence": lambda y, p: _per_example(_kl(match_targets(y, p), p)),
        "cosine_similarity": lambda y, p: _per_example(
            -optax.losses.cosine_similarity(p, match_targets(y, p), epsilon=1e-12)[..., None]
        ),
    }
    return Loss(name, simple[name], takes_logits=False)


def _kl(y: jax.Array, p: jax.Array) -> jax.Array:
    y = jnp.clip(y, EPSILON, 1.0)
    p = jnp.clip(p, EPSILON, 1.0)
    return (y * jnp.log(y / p)).sum(-1, keepdims=True)
