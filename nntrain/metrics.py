"""Keras's metrics as streaming sums, so an epoch's figure is the weighted mean over the whole
epoch (not a mean of batch means) and accumulates on the device. The weight is 0 for padding
rows, else 1, or the example's weight for Keras's `weighted_metrics`.

A metric is `update(y_true, y_pred, weight) -> sums` (a small vector added up over batches,
on the device) and `result(sums) -> float` (on the host, from the summed vector).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nntrain.config.compile import METRICS
from nntrain.config.entries import Args
from nntrain.lazy import jax, jnp
from nntrain.losses import match_targets


@dataclass(frozen=True)
class Metric:
    name: str  # the name in logs, e.g. "accuracy"
    update: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    result: Callable[[np.ndarray], float]
    size: int = 2
    weighted: bool = False  # by sample and class weights (Keras's weighted_metrics)
    takes_step_weights: bool = False  # a mean over values: works on a masked output's steps


def _weighted_mean(per_example: Callable[[jax.Array, jax.Array], jax.Array]):
    def update(y, pred, weight):
        # a weight per step (batch, steps) for an output with a mask over its steps: each
        # real step counts once, as in Keras
        value = per_example(y, pred).reshape(*weight.shape, -1).mean(axis=-1)
        return jnp.stack([(value * weight).sum(), weight.sum()])

    return update


def _mean_of_sums(sums: np.ndarray) -> float:
    # read out on the host, from the sums the device accumulated
    return float(sums[0] / max(float(sums[1]), 1e-12))


def _labels(y: jax.Array, pred: jax.Array) -> jax.Array:
    return y.reshape(pred.shape[:-1]).astype(jnp.int32)


def _top_k(k: int, sparse: bool):
    def hit(y, pred):
        labels = _labels(y, pred) if sparse else jnp.argmax(y, -1)
        target_score = jnp.take_along_axis(pred, labels[..., None], axis=-1)
        # in the top k when fewer than k classes score strictly higher
        return ((pred > target_score).sum(-1) < k).astype(jnp.float32)

    return hit


def _are_labels(targets: tuple[int, ...], output: tuple[int, ...]) -> bool:
    """Targets (per example) that are class indices: one dimension fewer than the output,
    or a last dimension of 1 against several units."""
    return len(targets) < len(output) or (targets[-1:] == (1,) and output[-1:] != (1,))


def _accuracy_kind(targets: tuple[int, ...], output: tuple[int, ...]) -> str:
    """Which accuracy plain "accuracy" is, from the per-example shapes, as Keras 3 decides
    (`compile_utils.is_binary_or_sparse_categorical`): one output unit is binary, class
    indices sparse, else categorical."""
    if output[-1:] == (1,):
        return "binary_accuracy"
    return "sparse_categorical_accuracy" if _are_labels(targets, output) \
        else "categorical_accuracy"


_OTHER_FORM = {"categorical_accuracy": "sparse_categorical_accuracy",
               "top_k_categorical_accuracy": "sparse_top_k_categorical_accuracy"}
_OTHER_FORM.update({v: k for k, v in _OTHER_FORM.items()})


def target_problem(written: str, targets: tuple[int, ...],
                   output: tuple[int, ...]) -> tuple[str, str] | None:
    """(what the metric needs, how to fix it) when targets of shape `targets` (per example)
    cannot be scored against outputs of shape `output`; None when they can."""
    name = METRICS.canonical(written)
    labels = _are_labels(targets, output)
    if name == "accuracy":
        name = _accuracy_kind(targets, output)
    if name.startswith("sparse_"):
        need, fine = "class indices (one integer per example)", labels
    elif name in _OTHER_FORM:
        need, fine = f"one-hot targets of shape {output}", targets == output
    else:
        need, fine = f"targets of the output's shape {output}", \
            math.prod(targets) == math.prod(output)
    if fine:
        return None
    if name in _OTHER_FORM:
        fix = f"use {_OTHER_FORM[name]} for these targets"
    elif labels:
        fix = "for class indices use accuracy or sparse_categorical_accuracy"
    else:
        fix = "give targets of the output's shape, or choose a metric that fits them"
    return need, fix


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b is 0 (Keras's divide_no_nan)."""
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def _weights_like(weight: jax.Array, pred: jax.Array) -> jax.Array:
    return jnp.broadcast_to(weight.reshape((-1,) + (1,) * (pred.ndim - 1)), pred.shape)


def _precision_or_recall(kind: str, log_name: str, args: Args) -> Metric:
    """Weighted true positives, false positives and false negatives over the epoch."""
    top_k, class_id = args.top_k, args.class_id
    threshold = args.thresholds if args.thresholds is not None else \
        (0.5 if top_k is None else -np.inf)  # Keras: with top_k, the top k are positives

    def update(y, pred, weight):
        truth = match_targets(y, pred) != 0
        w = _weights_like(weight, pred)
        if top_k is not None:  # exactly k kept, ties or not, as Keras's _filter_top_k
            top = jax.lax.top_k(pred, top_k)[1]
            kept = jax.nn.one_hot(top, pred.shape[-1], dtype=jnp.bool_).any(axis=-2)
            pred = jnp.where(kept, pred, -jnp.inf)
        if class_id is not None:
            truth, pred, w = truth[..., class_id], pred[..., class_id], w[..., class_id]
        positive = pred > threshold
        return jnp.stack([(w * (positive & truth)).sum(), (w * (positive & ~truth)).sum(),
                          (w * (~positive & truth)).sum()])

    def result(sums):
        tp, fp, fn = np.asarray(sums, np.float64)
        return float(_divide(np.array(tp), np.array(tp + (fp if kind == "precision" else fn))))

    return Metric(log_name, update, result, size=3)


def keras_thresholds(n: int) -> np.ndarray:
    """Keras's AUC thresholds: evenly spaced in (0, 1), with a first just below 0 and a last
    just above 1 so every prediction falls between two."""
    inner = [(i + 1) / (n - 1) for i in range(n - 2)]
    return np.array([-1e-7, *inner, 1 + 1e-7], np.float32)


def _auc(log_name: str, args: Args) -> Metric:
    """Confusion counts at every threshold over the epoch (TP, FP, TN, FN, weighted), and
    the area from them on the host, as Keras's AUC computes it."""
    thresholds = keras_thresholds(args.num_thresholds)
    n = len(thresholds)

    def update(y, pred, weight):
        # Keras clips to 0..1: a value past either end still counts at the end thresholds
        # (-epsilon and 1 + epsilon), so a linear output's curve reaches (0, 0) and (1, 1)
        pred = jax.nn.sigmoid(pred) if args.from_logits else jnp.clip(pred, 0.0, 1.0)
        truth = (match_targets(y, pred) != 0).reshape(-1).astype(jnp.float32)
        w = _weights_like(weight, pred).reshape(-1)
        above = (pred.reshape(-1, 1) > jnp.asarray(thresholds)).astype(jnp.float32)
        positive, negative = w * truth, w * (1 - truth)
        tp, fp = positive @ above, negative @ above
        return jnp.concatenate([tp, fp, negative.sum() - fp, positive.sum() - tp])

    def result(sums):
        tp, fp, tn, fn = np.asarray(sums, np.float64).reshape(4, n)
        if args.curve == "PR":
            return float(_interpolated_pr_auc(tp, fp, fn))
        recall, fp_rate = _divide(tp, tp + fn), _divide(fp, fp + tn)
        return float(np.sum((fp_rate[:-1] - fp_rate[1:]) * (recall[:-1] + recall[1:]) / 2))

    return Metric(log_name, update, result, size=4 * n)


def _interpolated_pr_auc(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Keras's precision-recall area (Davis & Goadrich 2006): precision interpolated between
    thresholds as the counts change, not linearly."""
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = _divide(dtp, np.maximum(dp, 0))
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = np.where(both, _divide(p[:-1], np.maximum(p[1:], 0)), 1.0)
    increments = _divide(slope * (dtp + intercept * np.log(ratio)),
                         np.maximum(tp[1:] + fn[1:], 0))
    return float(np.sum(increments))


def build_metric(written: str, args: Args) -> Metric:
    """The metric written as `written` (a name and its validated arguments)."""
    name = METRICS.canonical(written)
    log_name = getattr(args, "name", None) or (
        name if written[0].isupper() or name == "root_mean_squared_error" else written)
    if name in ("precision", "recall"):
        return _precision_or_recall(name, log_name, args)
    if name == "auc":
        return _auc(log_name, args)
    per_example: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        "sparse_categorical_accuracy": lambda y, p: (
            jnp.argmax(p, -1) == _labels(y, p)
        ).astype(jnp.float32),
        "categorical_accuracy": lambda y, p: (
            jnp.argmax(p, -1) == jnp.argmax(y, -1)
        ).astype(jnp.float32),
        # the targets as they are, as Keras compares them: a soft label 0.9 is never a hit
        "binary_accuracy": lambda y, p: (
            (p > getattr(args, "threshold", 0.5)).astype(jnp.float32) == match_targets(y, p)
        ).astype(jnp.float32),
        # resolved when the step is traced: the shapes are known there
        "accuracy": lambda y, p: per_example[_accuracy_kind(y.shape[1:], p.shape[1:])](y, p),
        "top_k_categorical_accuracy": _top_k(getattr(args, "k", 5), sparse=False),
        "sparse_top_k_categorical_accuracy": _top_k(getattr(args, "k", 5), sparse=True),
        "mean_absolute_error": lambda y, p: jnp.abs(p - match_targets(y, p)),
        "mean_squared_error": lambda y, p: jnp.square(p - match_targets(y, p)),
        "root_mean_squared_error": lambda y, p: jnp.square(p - match_targets(y, p)),
    }
    result = _mean_of_sums
    if name == "root_mean_squared_error":
        def result(sums):
            return float(np.sqrt(_mean_of_sums(sums)))
    return Metric(log_name, _weighted_mean(per_example[name]), result, takes_step_weights=True)
