"""Losses and metrics against NumPy references, Keras's conventions included."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nntrain.config.compile import (
    LOSSES,
    METRICS,
    BinaryCrossentropyArgs,
    CategoricalCrossentropyArgs,
    HuberArgs,
    SparseCategoricalCrossentropyArgs,
    SparseTopKCategoricalAccuracyArgs,
    TopKCategoricalAccuracyArgs,
)
from nntrain.losses import build_loss
from nntrain.metrics import build_metric

EPS = 1e-7


def loss_value(name, y, pred, args=None, activation=None):
    args = args if args is not None else LOSSES.args[LOSSES.canonical(name)]()
    loss = build_loss(name, args, activation)
    return loss, np.asarray(loss.fn(jnp.asarray(y), jnp.asarray(pred, jnp.float32)))


def log_softmax(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.0, 1.0, 0.0]])
LABELS = np.array([0, 2, 1, 0])
LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 1.0, 0.0], [4.0, -2.0, 1.0]])


# -- cross-entropies -----------------------------------------------------------------------------


def test_sparse_crossentropy_on_probabilities():
    loss, value = loss_value("sparse_categorical_crossentropy", LABELS, PROBS)
    p = np.clip(PROBS[np.arange(4), LABELS], EPS, 1 - EPS)
    np.testing.assert_allclose(value, -np.log(p), rtol=1e-5)
    assert value[3] == pytest.approx(-np.log(EPS), rel=1e-5)  # clipped, not inf
    assert loss.sparse_labels and not loss.takes_logits


def test_sparse_crossentropy_normalises_probabilities_like_keras():
    probs = np.array([[2.0, 1.0, 1.0]])  # sums to 4: Keras divides by the sum first
    _, value = loss_value("sparse_categorical_crossentropy", np.array([0]), probs)
    np.testing.assert_allclose(value, [-np.log(0.5)], rtol=1e-6)


def test_sparse_crossentropy_takes_labels_of_shape_n_1():
    _, flat = loss_value("sparse_categorical_crossentropy", LABELS, PROBS)
    _, column = loss_value("sparse_categorical_crossentropy", LABELS[:, None], PROBS)
    assert column.shape == (4,)
    np.testing.assert_allclose(column, flat, rtol=1e-6)


@pytest.mark.parametrize(("from_logits", "activation"), [(True, None), (False, "softmax")])
def test_sparse_crossentropy_fused_from_logits(from_logits, activation):
    args = SparseCategoricalCrossentropyArgs(from_logits=from_logits)
    loss, value = loss_value("sparse_categorical_crossentropy", LABELS, LOGITS, args, activation)
    assert loss.takes_logits
    np.testing.assert_allclose(value, -log_softmax(LOGITS)[np.arange(4), LABELS], rtol=1e-5)


def test_fused_crossentropy_stays_finite_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0]])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        naive = np.log(np.exp(logits.astype(np.float32)) / np.exp(logits).sum(-1, keepdims=True))
    assert not np.isfinite(naive).all()  # what log(softmax(x)) would give
    _, value = loss_value("sparse_categorical_crossentropy", np.array([0, 1]), logits,
                          SparseCategoricalCrossentropyArgs(from_logits=True))
    np.testing.assert_allclose(value, [0.0, 2000.0], atol=1e-3)
    _, value = loss_value("categorical_crossentropy", np.eye(3)[[0, 1]], logits,
                          CategoricalCrossentropyArgs(from_logits=True))
    np.testing.assert_allclose(value, [0.0, 2000.0], atol=1e-3)
    _, value = loss_value("binary_crossentropy", np.array([0.0, 1.0, 1.0, 0.0]),
                          np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]]),
                          BinaryCrossentropyArgs(from_logits=True))
    np.testing.assert_allclose(value, [1000.0, 1000.0, 0.0, 0.0], atol=1e-3)


def test_categorical_crossentropy_probabilities_logits_and_smoothing():
    onehot = np.eye(3)[LABELS]
    _, value = loss_value("categorical_crossentropy", onehot, PROBS)
    p = np.clip(PROBS, EPS, 1 - EPS)
    np.testing.assert_allclose(value, -(onehot * np.log(p)).sum(-1), rtol=1e-5)

    args = CategoricalCrossentropyArgs(label_smoothing=0.1)
    _, value = loss_value("categorical_crossentropy", onehot, LOGITS, args, "softmax")
    smoothed = onehot * 0.9 + 0.1 / 3
    np.testing.assert_allclose(value, -(smoothed * log_softmax(LOGITS)).sum(-1), rtol=1e-5)


def test_binary_crossentropy_on_probabilities_with_flat_targets():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.array([[0.9], [0.2], [0.3], [0.0]])
    _, value = loss_value("binary_crossentropy", y, p)
    assert value.shape == (4,)  # not (4, 4) by broadcasting (n,) against (n, 1)
    q = np.clip(p[:, 0], EPS, 1 - EPS)
    np.testing.assert_allclose(value, -(y * np.log(q) + (1 - y) * np.log(1 - q)), rtol=1e-4)


def test_binary_crossentropy_fused_and_smoothed():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    z = np.array([[2.0, -1.0], [0.5, 3.0]])
    args = BinaryCrossentropyArgs(label_smoothing=0.2)
    loss, value = loss_value("binary_crossentropy", y, z, args, "sigmoid")
    assert loss.takes_logits
    t = y * 0.8 + 0.1
    per_unit = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(value, per_unit.mean(-1), rtol=1e-5)


# -- regression losses -------------------------------------------------------------------------

Y = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
P = np.array([[1.5, 2.0, 0.0], [-5.0, -1.0, 4.5]])


@pytest.mark.parametrize(("name", "reference"), [
    ("mse", lambda y, p: ((p - y) ** 2).mean(-1)),
    ("mean_squared_error", lambda y, p: ((p - y) ** 2).mean(-1)),
    ("mae", lambda y, p: np.abs(p - y).mean(-1)),
    ("mean_absolute_error", lambda y, p: np.abs(p - y).mean(-1)),
])
def test_mse_mae(name, reference):
    _, value = loss_value(name, Y, P)
    np.testing.assert_allclose(value, reference(Y, P), rtol=1e-6)


@pytest.mark.parametrize("name", ["mse", "mae", "huber"])
def test_regression_targets_of_shape_n_against_predictions_n_1(name):
    y = np.array([1.0, 2.0, 3.0])
    p = np.array([[1.5], [0.0], [3.0]])
    _, value = loss_value(name, y, p)
    assert value.shape == (3,)
    err = np.abs(p[:, 0] - y)
    expected = {"mse": err**2, "mae": err,
                "huber": np.where(err <= 1, 0.5 * err**2, err - 0.5)}[name]
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_huber_delta():
    y = np.zeros((1, 4))
    p = np.array([[0.5, 3.0, -5.0, 2.0]])
    _, value = loss_value("huber", y, p, HuberArgs(delta=2.0))
    # 0.5 e^2 inside delta, 0.5 d^2 + d (|e| - d) outside
    per_unit = [0.125, 0.5 * 4 + 2 * 1, 0.5 * 4 + 2 * 3, 0.5 * 4]
    np.testing.assert_allclose(value, [np.mean(per_unit)], rtol=1e-6)


def test_kl_divergence():
    y = np.array([[0.2, 0.8], [1.0, 0.0]])
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    _, value = loss_value("kl_divergence", y, p)
    expected = [0.2 * np.log(0.4) + 0.8 * np.log(1.6),
                1.0 * np.log(4.0) + EPS * np.log(EPS / 0.75)]
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    _, alias = loss_value("kld", y, p)
    np.testing.assert_allclose(alias, value)


def test_cosine_similarity_is_negative_cosine():
    y = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    p = np.array([[2.0, 0.0], [-1.0, -1.0], [4.0, -3.0]])
    _, value = loss_value("cosine_similarity", y, p)
    np.testing.assert_allclose(value, [-1.0, 1.0, 0.0], atol=1e-6)


# -- metrics -------------------------------------------------------------------------------------


def metric(name, args=None):
    args = args if args is not None else METRICS.args[METRICS.canonical(name)]()
    return build_metric(name, args)


def evaluate(m, y, p, w=None):
    w = np.ones(len(y)) if w is None else w
    sums = m.update(jnp.asarray(y), jnp.asarray(p, jnp.float32), jnp.asarray(w, jnp.float32))
    return float(m.result(sums))


# Keras 3 resolves plain "accuracy" from the shapes of targets and outputs, whatever the loss

def test_accuracy_of_class_indices_is_sparse_categorical():
    m = metric("accuracy")
    assert m.name == "accuracy"
    # argmax: 0, 2, 2, 1 against labels 0, 2, 1, 0
    assert evaluate(m, LABELS, PROBS) == pytest.approx(0.5)
    assert evaluate(m, LABELS[:, None], PROBS) == pytest.approx(0.5)


def test_accuracy_of_one_hot_targets_is_categorical():
    m = metric("acc")
    assert m.name == "acc"
    assert evaluate(m, np.eye(3)[LABELS], PROBS) == pytest.approx(0.5)


def test_accuracy_of_one_output_unit_is_binary_with_any_loss():
    m = metric("accuracy")
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    p = np.array([[0.9], [0.2], [0.3], [0.7], [0.51]])
    assert evaluate(m, y, p) == pytest.approx(3 / 5)
    assert evaluate(m, y[:, None], p) == pytest.approx(3 / 5)
    # a regression output (trained with mse, say): thresholded at 0.5, not compared exactly
    assert evaluate(m, np.array([1.0, 0.0, 1.0]), np.array([[0.9], [0.2], [0.7]])) == 1.0


def test_binary_accuracy_compares_soft_labels_exactly_as_keras_does():
    # keras.metrics.binary_accuracy: y_true == (y_pred > threshold), the labels as they are
    y = np.array([0.95, 0.05, 1.0, 0.0])
    p = np.array([[0.9], [0.2], [0.7], [0.6]])
    assert evaluate(metric("binary_accuracy"), y, p) == pytest.approx(0.25)


def test_accuracy_of_several_binary_labels_is_categorical_as_in_keras():
    # Keras 3 picks categorical accuracy for multi-label targets (argmax against argmax)
    y = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = np.array([[0.9, 0.1, 0.8], [0.6, 0.4, 0.1]])
    assert evaluate(metric("accuracy"), y, p) == pytest.approx(0.5)


@pytest.mark.parametrize(("k", "expected"), [(1, 0.25), (2, 0.75), (3, 1.0)])
def test_top_k_accuracy(k, expected):
    labels = np.array([0, 1, 0, 2])
    # ranks of the true class in LOGITS: row 0 first, row 1 second, row 2 third, row 3 second
    sparse = metric("sparse_top_k_categorical_accuracy",
                    args=SparseTopKCategoricalAccuracyArgs(k=k))
    assert evaluate(sparse, labels, LOGITS) == pytest.approx(expected)
    dense = metric("top_k_categorical_accuracy", args=TopKCategoricalAccuracyArgs(k=k))
    assert evaluate(dense, np.eye(3)[labels], LOGITS) == pytest.approx(expected)


def test_error_metrics():
    y, p = Y, P
    sq = ((p - y) ** 2).mean(-1)
    assert evaluate(metric("mae"), y, p) == pytest.approx(np.abs(p - y).mean(), rel=1e-6)
    assert evaluate(metric("mse"), y, p) == pytest.approx(sq.mean(), rel=1e-6)
    rmse = metric("rmse")
    assert rmse.name == "root_mean_squared_error"
    assert evaluate(rmse, y, p) == pytest.approx(np.sqrt(sq.mean()), rel=1e-6)


@pytest.mark.parametrize(("name", "per_example"), [
    ("mae", lambda y, p: np.abs(p - y)),
    ("mse", lambda y, p: (p - y) ** 2),
])
def test_weighted_metric_over_batches_is_the_weighted_mean_over_examples(name, per_example):
    m = metric(name)
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    p = np.array([[1.0], [0.0], [6.0], [4.5], [9.0]])
    w = np.array([1.0, 2.0, 0.0, 1.0, 3.0])
    sums = jnp.zeros(2)
    batches = [slice(0, 4), slice(4, 5)]
    for b in batches:
        sums = sums + m.update(jnp.asarray(y[b]), jnp.asarray(p[b], jnp.float32),
                               jnp.asarray(w[b], jnp.float32))
    values = per_example(y, p[:, 0])
    expected = (values * w).sum() / w.sum()
    assert float(m.result(sums)) == pytest.approx(expected, rel=1e-6)
    batch_means = [(values[b] * w[b]).sum() / w[b].sum() for b in batches]
    assert abs(np.mean(batch_means) - expected) > 0.05 * expected  # tells them apart


def test_weighted_rmse_over_batches():
    m = metric("rmse")
    y = np.array([0.0, 0.0, 0.0])
    p = np.array([[3.0], [4.0], [1.0]])
    w = np.array([1.0, 1.0, 2.0])
    sums = m.update(jnp.asarray(y[:2]), jnp.asarray(p[:2], jnp.float32), jnp.asarray(w[:2]))
    sums = sums + m.update(jnp.asarray(y[2:]), jnp.asarray(p[2:], jnp.float32),
                           jnp.asarray(w[2:]))
    # sqrt((9 + 16 + 2 * 1) / 4)
    assert float(m.result(sums)) == pytest.approx(np.sqrt(27 / 4), rel=1e-6)


def test_weighted_accuracy_over_batches():
    m = metric("accuracy", "sparse_categorical_crossentropy")
    w = np.array([3.0, 1.0, 1.0, 0.0])
    sums = m.update(jnp.asarray(LABELS[:2]), jnp.asarray(PROBS[:2], jnp.float32),
                    jnp.asarray(w[:2]))
    sums = sums + m.update(jnp.asarray(LABELS[2:]), jnp.asarray(PROBS[2:], jnp.float32),
                           jnp.asarray(w[2:]))
    # hits 1, 1, 0, 0 with weights 3, 1, 1, 0
    assert float(m.result(sums)) == pytest.approx(4 / 5)


# -- precision, recall, AUC: Keras's confusion-count metrics -----------------------------------
def _seeded(n: int = 257):
    rng = np.random.default_rng(0)
    y_bin = rng.integers(0, 2, (n, 1)).astype(np.float32)
    p_bin = np.clip(y_bin * 0.3 + rng.random((n, 1)) * 0.7, 0, 1).astype(np.float32)
    y_ml = rng.integers(0, 2, (n, 4)).astype(np.float32)
    p_ml = rng.random((n, 4)).astype(np.float32)
    return y_bin, p_bin, y_ml, p_ml, rng.random(n).astype(np.float32) * 2


def batched(name, y, p, w=None, batch=32, **args):
    """The epoch's figure from batches of 32, as training accumulates it."""
    m = metric(name, args=METRICS.args[METRICS.canonical(name)](**args))
    w = np.ones(len(y), np.float32) if w is None else w
    sums = sum(np.asarray(m.update(jnp.asarray(y[b:b + batch]), jnp.asarray(p[b:b + batch]),
                                   jnp.asarray(w[b:b + batch])))
               for b in range(0, len(y), batch))
    return m.result(sums)


def test_precision_and_recall_count_positives_over_the_epoch():
    y = np.array([[1.0], [0.0], [1.0], [1.0], [0.0]])
    p = np.array([[0.9], [0.8], [0.4], [0.7], [0.1]])  # TP 2, FP 1, FN 1
    assert batched("precision", y, p, batch=2) == pytest.approx(2 / 3)
    assert batched("recall", y, p, batch=2) == pytest.approx(2 / 3)
    w = np.array([1.0, 3.0, 1.0, 1.0, 1.0])
    assert batched("precision", y, p, w, batch=2) == pytest.approx(2 / 5)
    assert batched("recall", y, p, thresholds=0.3) == pytest.approx(1.0)
    assert metric("Precision").name == "precision"  # Keras's class name logs as Keras does


def test_auc_of_perfect_inverted_and_tied_scores():
    y = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert batched("auc", y, np.array([[0.1], [0.2], [0.8], [0.9]])) == pytest.approx(1.0)
    assert batched("auc", y, np.array([[0.9], [0.8], [0.2], [0.1]])) == pytest.approx(0.0)
    assert batched("auc", y, np.full((4, 1), 0.5)) == pytest.approx(0.5)


@pytest.mark.parametrize("curve", ["ROC", "PR"])
def test_auc_of_values_past_0_and_1_clips_them_as_keras_does(curve):
    """A linear output trained with mse gives values outside 0..1; Keras 3.15 clips them
    into its thresholds' range: perfectly separated scores have an area of 1 (0.5 unclipped)."""
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    p = np.array([[1.0], [0.0], [1.2], [-0.3]])
    assert batched("auc", y, p, curve=curve) == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "args", "keras"), [
    # Keras 3.15.1 (JAX backend) on the same seeded data: keras.metrics.Precision(), ...
    ("precision", {}, (0.729927, 0.721037, 0.493827, 0.4974)),
    ("recall", {}, (0.729927, 0.738248, 0.458015, 0.442484)),
    ("auc", {}, (0.828193, 0.828252, 0.477921, 0.459302)),
    ("auc", {"curve": "PR"}, (0.868073, 0.868913, 0.503621, 0.516767)),
])
def test_confusion_metrics_equal_keras(name, args, keras):
    """Binary and multi-label targets, with and without sample weights, in batches."""
    y_bin, p_bin, y_ml, p_ml, w = _seeded()
    got = (batched(name, y_bin, p_bin, **args), batched(name, y_bin, p_bin, w, **args),
           batched(name, y_ml, p_ml, **args), batched(name, y_ml, p_ml, w, **args))
    assert got == pytest.approx(keras, abs=2e-6)


def test_precision_top_k_recall_class_id_and_coarser_auc_equal_keras():
    y_bin, p_bin, y_ml, p_ml, _ = _seeded()
    assert batched("precision", y_ml, p_ml, top_k=2) == pytest.approx(0.476654, abs=2e-6)
    assert batched("recall", y_ml, p_ml, class_id=1) == pytest.approx(0.443609, abs=2e-6)
    assert batched("precision", y_ml, p_ml, thresholds=0.3) == pytest.approx(0.491429, abs=2e-6)
    assert batched("auc", y_bin, p_bin, num_thresholds=50) == pytest.approx(0.826521, abs=2e-6)


def test_precision_top_k_keeps_exactly_k_when_scores_tie():
    # Keras's _filter_top_k: ties at the k-th value do not add positives (Keras: 0.25, 0.5)
    y = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    p = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
    assert batched("precision", y, p, top_k=2) == pytest.approx(0.25)
    assert batched("recall", y, p, top_k=2) == pytest.approx(0.5)
