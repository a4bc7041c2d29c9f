"""Keras's losses by name, as per-example functions built on optax.

Each loss maps `(y_true, y_pred, steps=None)` to one value per example (mean over the other
axes, as Keras's `sum_over_batch_size` does; with `steps`, an output's mask over its steps,
the sum over the real ones). A cross-entropy after a softmax/sigmoid output is computed
from the logits (log-softmax), never as log(softmax(x)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nntrain.config.compile import LOSSES
from nntrain.config.entries import Args
from nntrain.lazy import jax, jnp, optax

EPSILON = 1e-7  # Keras's backend epsilon, for losses computed from probabilities

PerExample = Callable[..., "jax.Array"]  # (y_true, y_pred, steps=None) -> (batch,)


@dataclass(frozen=True)
class Loss:
    name: str
    fn: PerExample
    takes_logits: bool  # fn expects pre-activation values
    sparse_labels: bool = False  # targets are class indices


def _per_example(x: jax.Array, steps: jax.Array | None = None) -> jax.Array:
    """One value per example: the mean over the other axes; with a mask over the steps
    (batch, steps), the sum over the real steps of each step's mean (the caller divides by
    the batch's real steps, as Keras's masked sum_over_batch_size does)."""
    if steps is None:
        return x.reshape(x.shape[0], -1).mean(axis=1)
    per_step = x.reshape(*steps.shape, -1).mean(axis=-1)
    # `where`, not a product: whatever a padded step computes (NaN, say) stays out
    return jnp.where(steps > 0, per_step, 0.0).sum(axis=1)


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

        def sparse_ce(y, pred, steps=None):
            labels = y.reshape(y.shape[0], *pred.shape[1:-1]).astype(jnp.int32)
            if fused:
                ce = optax.losses.softmax_cross_entropy_with_integer_labels(pred, labels)
            else:
                p = pred / pred.sum(-1, keepdims=True)
                p = jnp.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
                ce = -jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON))
            return _per_example(ce, steps)

        return Loss(name, sparse_ce, fused, sparse_labels=True)

    if name == "categorical_crossentropy":
        fused = from_logits or output_activation == "softmax"

        def categorical_ce(y, pred, steps=None):
            y = _smooth(match_targets(y, pred), smoothing, pred.shape[-1])
            if fused:
                return _per_example(optax.losses.softmax_cross_entropy(pred, y), steps)
            p = jnp.clip(pred / pred.sum(-1, keepdims=True), EPSILON, 1.0 - EPSILON)
            return _per_example(-(y * jnp.log(p)).sum(-1), steps)

        return Loss(name, categorical_ce, fused)

    if name == "binary_crossentropy":
        fused = from_logits or output_activation == "sigmoid"

        def binary_ce(y, pred, steps=None):
            y = _smooth(match_targets(y, pred), smoothing, 2)
            if fused:
                return _per_example(optax.losses.sigmoid_binary_cross_entropy(pred, y), steps)
            p = jnp.clip(pred, EPSILON, 1.0 - EPSILON)
            return _per_example(-(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p)), steps)

        return Loss(name, binary_ce, fused)

    elementwise: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        "mean_squared_error": lambda y, p: jnp.square(p - y),
        "mean_absolute_error": lambda y, p: jnp.abs(p - y),
        "huber": lambda y, p: optax.losses.huber_loss(p, y, delta=args.delta),
        "kl_divergence": lambda y, p: _kl(y, p),
        "cosine_similarity": lambda y, p:
            -optax.losses.cosine_similarity(p, y, epsilon=1e-12)[..., None],
    }
    values = elementwise[name]

    def simple(y, pred, steps=None):
        return _per_example(values(match_targets(y, pred), pred), steps)

    return Loss(name, simple, takes_logits=False)


def _kl(y: jax.Array, p: jax.Array) -> jax.Array:
    y = jnp.clip(y, EPSILON, 1.0)
    p = jnp.clip(p, EPSILON, 1.0)
    return (y * jnp.log(y / p)).sum(-1, keepdims=True)
