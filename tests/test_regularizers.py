"""Weight regularizers and constraints: Keras's penalties in the loss and the reported figures,
Keras's constraints after every update, and config errors that name the place."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from clirunner import nntrain
from runfiles import history_rows, only_run

from nntrain import checkpoint
from nntrain.config.layers import CONSTRAINTS, REGULARIZERS
from nntrain.regularizers import constraint, penalty

FEATURES, CLASSES, LR = 8, 3, 0.1


def _validate(registry, value):
    from pydantic import TypeAdapter

    return TypeAdapter(registry.entry_type()).validate_python(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("l2", lambda w: 0.01 * np.sum(w ** 2)),  # Keras's default factors
    ("l1", lambda w: 0.01 * np.sum(np.abs(w))),
    ({"l2": 0.5}, lambda w: 0.5 * np.sum(w ** 2)),
    ({"l1_l2": {"l1": 0.1, "l2": 0.2}}, lambda w: 0.1 * np.sum(np.abs(w)) + 0.2 * np.sum(w ** 2)),
    # Keras: factor * 0.5 * sum(|off-diagonal of N N^T|) / pairs, N the unit-norm rows
    ("orthogonal_regularizer", lambda w: 0.01 * 0.5 * 2 * abs(
        (w[0] @ w[1]) / np.linalg.norm(w[0]) / np.linalg.norm(w[1])) / 1),
    ({"orthogonal_regularizer": {"factor": 0.2, "mode": "columns"}}, lambda w: 0.2 * 0.5 * 2
     * abs((w[:, 0] @ w[:, 1]) / np.linalg.norm(w[:, 0]) / np.linalg.norm(w[:, 1])) / 1),
])
def test_penalties_are_keras_sums(value, expected):
    w = np.array([[0.5, -2.0], [1.5, 0.25]], np.float32)
    got = float(penalty(_validate(REGULARIZERS, value))(jnp.asarray(w)))
    assert got == pytest.approx(expected(w.astype(np.float64)), rel=1e-6)


def _norms(w, axis):
    return np.sqrt(np.sum(w ** 2, axis=axis, keepdims=True))


@pytest.mark.parametrize(("value", "expected"), [
    # Keras: w * clip(norm, 0, max) / (1e-7 + norm), the norm over axis 0 (each unit's inputs)
    ({"max_norm": 1.0}, lambda w: w * np.minimum(_norms(w, 0), 1.0) / (1e-7 + _norms(w, 0))),
    ({"max_norm": {"max_value": 1.0, "axis": 1}},
     lambda w: w * np.minimum(_norms(w, 1), 1.0) / (1e-7 + _norms(w, 1))),
    ("unit_norm", lambda w: w / (1e-7 + _norms(w, 0))),
    ({"min_max_norm": {"min_value": 1.0, "max_value": 2.0, "rate": 0.5}},
     lambda w: w * (0.5 * np.clip(_norms(w, 0), 1.0, 2.0) + 0.5 * _norms(w, 0))
     / (1e-7 + _norms(w, 0))),
    ("non_neg", lambda w: np.where(w >= 0, w, 0.0)),
])
def test_constraints_are_kerass(value, expected):
    w = np.array([[3.0, -0.1, 0.2], [4.0, 0.1, -0.3]], np.float32)  # column norms 5, 0.14, 0.36
    got = np.asarray(constraint(_validate(CONSTRAINTS, value))(jnp.asarray(w)))
    np.testing.assert_allclose(got, expected(w.astype(np.float64)), rtol=1e-6, atol=1e-7)


CONFIG = """
name: regularized
seed: 0
data:
  train: data.npz
  validation: {path: val.npz}
model:
  input: [8]
  layers:
    - dense:
        units: 3
        activation: softmax
        kernel_initializer: ones
        bias_initializer: ones
        kernel_regularizer: {l2: 0.05}
        bias_regularizer: {l1: 0.02}
        kernel_constraint: {max_norm: 0.6}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: {sgd: 0.1}
fit:
  epochs: 2
  batch_size: 4
  shuffle: false
"""


OWN_LINES = {line.split(":")[0].strip(): line.strip() for line in CONFIG.splitlines()
             if line.strip().startswith(("kernel_", "bias_regularizer"))}


def _data(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, 10)
    xv = rng.normal(size=(6, FEATURES)).astype(np.float32)
    yv = rng.integers(0, CLASSES, 6)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=xv, y=yv)
    return x, y, xv, yv


def _cross_entropy(W, b, x, y):
    z = x @ W + b
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y]), p


def test_fit_adds_penalties_to_the_loss_and_constrains_after_each_step(tmp_path: Path):
    """Transcribes Keras 3's training step (and was checked against Keras 3.15 on JAX: the
    same weights to 3e-8): batch loss + l2 * sum(W**2) + l1 * sum(|b|), plain SGD on its
    gradient, then W's columns clipped to norm 0.6. `loss` and `val_loss` include the
    penalty; a partial last batch weighs by its size."""
    x, y, xv, yv = _data(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG)
    result = nntrain("fit", "config.yaml", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output

    W, b = np.ones((FEATURES, CLASSES)), np.ones(CLASSES)
    expected = []
    for _ in range(2):
        total = 0.0
        for start in range(0, 10, 4):
            xb, yb = x[start:start + 4].astype(np.float64), y[start:start + 4]
            n = len(yb)
            losses, p = _cross_entropy(W, b, xb, yb)
            total += (losses.mean() + 0.05 * np.sum(W ** 2) + 0.02 * np.sum(np.abs(b))) * n
            g = p.copy()
            g[np.arange(n), yb] -= 1
            g /= n
            W = W - LR * (xb.T @ g + 2 * 0.05 * W)
            b = b - LR * (g.sum(0) + 0.02 * np.sign(b))
            norms = np.sqrt(np.sum(W ** 2, axis=0, keepdims=True))
            W = W * np.clip(norms, 0, 0.6) / (1e-7 + norms)
        val, _ = _cross_entropy(W, b, xv.astype(np.float64), yv)
        penalty_now = 0.05 * np.sum(W ** 2) + 0.02 * np.sum(np.abs(b))
        expected.append((total / 10, val.mean() + penalty_now))

    run = only_run(tmp_path)
    rows = history_rows(run)
    for row, (loss, val_loss) in zip(rows, expected, strict=True):
        assert float(row["loss"]) == pytest.approx(loss, rel=1e-5)
        assert float(row["val_loss"]) == pytest.approx(val_loss, rel=1e-5)
    arrays, _ = checkpoint.load(run / "checkpoints" / "last")
    np.testing.assert_allclose(arrays["params/dense/kernel"], W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["params/dense/bias"], b, rtol=1e-5, atol=1e-6)
    assert np.sqrt((arrays["params/dense/kernel"] ** 2).sum(0)).max() <= 0.6 + 1e-6

    # `evaluate` reports the same penalized loss, as Keras's evaluate does
    result = nntrain("evaluate", str(run), "--split", "validation", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["loss"] == pytest.approx(expected[-1][1], rel=1e-5)


def test_bad_regularizer_and_constraint_are_config_errors(tmp_path: Path):
    cases = [
        ("kernel_regularizer: l3",
         "unknown regularizer 'l3' (one of: l1, l2, l1_l2, orthogonal_regularizer)"),
        ("kernel_regularizer: {l2: -1}", "kernel_regularizer", "greater than or equal to 0"),
        ("kernel_constraint: {max_norm: {axis: 2}}", "axis 2",
         "the kernel has 2 axes (8, 3): use 0..1"),
        ("bias_constraint: max_nrom", "unknown constraint 'max_nrom'", "max_norm"),
        ("bias_regularizer: orthogonal_regularizer", "weight 'bias'",
         "orthogonal_regularizer takes a 2-d weight, not shape (3,)"),
        ("activity_regularizer: orthogonal_regularizer",
         "orthogonal_regularizer is for weights, not an activity_regularizer"),
        # Keras's ways of writing them, answered with this file's
        ("kernel_regularizer: l1_l2", "give l1 or l2 (or both)", "with both 0 it adds nothing"),
        ("kernel_constraint: {max_norm: 0.6}\n        use_bias: false",
         "bias_regularizer given, but use_bias is false: that weight does not exist"),
        ("kernel_regularizer: {l2: 0.01, l1: 0.01}",
         "l1 and l2 together are l1_l2: {l1: ..., l2: ...}"),
        ("kernel_regularizer: 0.01",
         "unknown regularizer 0.01: name the regularizer, e.g. {l2: 0.01}"),
        ("kernel_regularizer: l2(0.01)", "write a call as a mapping, {l2: 0.01}"),
        ("kernel_regularizer: L1L2", "l1l2: give l1 or l2 (or both)"),  # Keras's class name
        ("kernel_regularizer: L1_L3", "did you mean 'l1_l2'?"),
        ("kernel_constraint: {min_max_norm: 1}",
         "expected its arguments as a mapping (axis, min_value, max_value, rate), found 1"),
        ("kernel_regularizer: {l2: {l2: 0.1, foo: 0.1}}",
         "model.layers[0].dense.kernel_regularizer.l2.foo: unknown key 'foo'"),
        ("kernel_constraint: {max_norm: 0.6}\n    - flatten: {kernel_regularizer: l2}",
         "flatten.kernel_regularizer: unknown key 'kernel_regularizer': this layer has no "
         "kernel weight"),
    ]
    for line, *words in cases:
        # a case takes the place of the config's own line for its key (a key given twice
        # is an error of its own)
        key = line.split(":")[0]
        own = OWN_LINES.get(key, OWN_LINES["kernel_constraint"])
        config = CONFIG.replace(own, line)
        (tmp_path / "bad.yaml").write_text(config)
        result = nntrain("validate", "bad.yaml", cwd=tmp_path)
        assert result.exit_code == 2, (line, result.output)
        for word in words:
            assert word in " ".join(result.output.split()), (line, result.output)
        assert "Traceback" not in result.output
        assert "Args" not in result.output  # pydantic's model names stay inside


def test_kerass_serialized_form_is_accepted(tmp_path: Path):
    _data(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG.replace(
        "kernel_regularizer: {l2: 0.05}",
        "kernel_regularizer: {class_name: L2, config: {l2: 0.05}}").replace(
        "kernel_constraint: {max_norm: 0.6}",
        "kernel_constraint: {class_name: MaxNorm, config: {max_value: 0.6, axis: 0}}"))
    assert nntrain("fit", "config.yaml", "-q", cwd=tmp_path).exit_code == 0
    saved = (only_run(tmp_path) / "config.yaml").read_text()
    assert "l2: {l2: 0.05}" in saved and "max_norm: {axis: 0, max_value: 0.6}" in saved


def test_set_that_breaks_a_regularizer_is_named_as_the_place(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    result = nntrain("validate", "config.yaml", "--set",
                     "model.layers[0].dense.kernel_regularizer.l1=0.001", cwd=tmp_path)
    assert result.exit_code == 2
    assert "--set model.layers[0].dense.kernel_regularizer.l1=0.001: " in result.output


def test_conv_and_batch_norm_weights_take_them_too(tmp_path: Path):
    """Keras's advice for a Conv2D kernel: max_norm over axes [0, 1, 2], one norm per
    filter. BatchNormalization's gamma and beta take regularizers and constraints too."""
    config = Path(__file__).parent / "configs" / "tiny_cnn.yaml"
    result = nntrain(
        "fit", str(config), "-q",
        "--set", "model.layers[0].conv2d.kernel_constraint={max_norm: {max_value: 0.5, "
                 "axis: [0, 1, 2]}}",
        "--set", "model.layers[1]={batch_normalization: {gamma_regularizer: l2, "
                 "beta_constraint: non_neg}}",
        "--set", "model.layers[5].dense.kernel_regularizer={l1_l2: {l1: 0.01, l2: 0.01}}",
        cwd=tmp_path)
    assert result.exit_code == 0, result.output
    arrays, _ = checkpoint.load(only_run(tmp_path) / "checkpoints" / "last")
    kernel = arrays["params/conv2d/kernel"]
    assert kernel.shape == (3, 3, 1, 4)
    per_filter = np.sqrt((kernel ** 2).sum(axis=(0, 1, 2)))
    assert per_filter.max() <= 0.5 + 1e-6
    assert per_filter.min() > 0.1  # clipped, not zeroed
    assert arrays["params/batch_normalization/beta"].min() >= 0.0


def test_infinite_factors_and_repeated_axes_are_refused(tmp_path: Path):
    for line, words in [
        ("kernel_regularizer: {l2: .inf}", "kernel_regularizer"),
        ("kernel_constraint: {unit_norm: {axis: [0, -2]}}", "names an axis twice: [0, -2]"),
    ]:
        (tmp_path / "bad.yaml").write_text(
            CONFIG.replace("kernel_constraint: {max_norm: 0.6}", line))
        result = nntrain("validate", "bad.yaml", cwd=tmp_path)
        assert result.exit_code == 2 and words in result.output, (line, result.output)


LAYER = '''
from nntrain.layers.base import Built, Layer, Weight


class Scaled(Layer):
    """x * w, with w declared as the built-in layers do, and a regularizer and constraint
    written as a config writes them."""

    def build(self, input_shape):
        w = Weight((input_shape[-1],), "ones", regularizer=REGULARIZER, constraint="non_neg")
        return Built({"w": w}, {}, input_shape)

    def call(self, params, state, x, *, training, rng, **_):
        return x * params["w"], state
'''


PLAIN = '''
import jax.numpy as jnp
from nntrain.layers.base import Layer


class Plain(Layer):
    """A layer with its own init: no declared weights for a regularizer to reach."""

    def init(self, rng, input_shape):
        return {"w": jnp.ones(input_shape[-1])}, {}, input_shape

    def call(self, params, state, x, *, training, rng, **_):
        return x * params["w"], state
'''


def test_a_custom_layers_weights_take_them_as_a_config_writes_them(tmp_path: Path):
    _data(tmp_path)
    config = CONFIG.replace("  layers:\n", "  layers:\n    - my_scale:Scaled\n")
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "my_scale.py").write_text(LAYER.replace("REGULARIZER", "{'l1': 100.0}"))
    result = nntrain("fit", "config.yaml", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    arrays, _ = checkpoint.load(only_run(tmp_path) / "checkpoints" / "last")
    # a strong l1 pull towards 0 and non_neg: w ends at 0, not below
    assert arrays["params/scaled/w"].min() == 0.0

    (tmp_path / "ignored.yaml").write_text(config.replace(
        "- my_scale:Scaled", "- my_plain:Plain: {kernel_regularizer: {l2: 100}}"))
    (tmp_path / "my_plain.py").write_text(PLAIN)
    result = nntrain("validate", "ignored.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    assert "is given kernel_regularizer, but none of its weights takes one" in \
        " ".join(result.output.split())

    (tmp_path / "bad.yaml").write_text(config.replace("my_scale:", "my_bad_scale:"))
    (tmp_path / "my_bad_scale.py").write_text(LAYER.replace("REGULARIZER", "'l3'"))
    result = nntrain("validate", "bad.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    assert "weight 'w': regularizer 'l3' is not one of l1, l2, l1_l2" in result.output, \
        result.output


ACTIVITY = CONFIG.replace("""        kernel_constraint: {max_norm: 0.6}
""", """        kernel_constraint: {max_norm: 0.6}
        activity_regularizer: {l2: 0.3}
""")


def test_activity_regularizer_is_kerass_penalty_over_the_batch_size(tmp_path: Path):
    """Keras 3 adds `regularizer(outputs) / batch_size` for each batch: here 0.3 times the
    sum of the squared softmax outputs over the batch's real rows (the last batch has 2)."""
    x, y, xv, yv = _data(tmp_path)
    (tmp_path / "config.yaml").write_text(ACTIVITY)
    result = nntrain("fit", "config.yaml", "-q", "--epochs", "1", cwd=tmp_path)
    assert result.exit_code == 0, result.output

    W, b = np.ones((FEATURES, CLASSES)), np.ones(CLASSES)
    total = 0.0
    for start in range(0, 10, 4):
        xb, yb = x[start:start + 4].astype(np.float64), y[start:start + 4]
        n = len(yb)
        losses, p = _cross_entropy(W, b, xb, yb)
        activity = 0.3 * np.sum(p ** 2) / n
        total += (losses.mean() + 0.05 * np.sum(W ** 2) + 0.02 * np.sum(np.abs(b))
                  + activity) * n
        # d(activity)/dz through the softmax: J^T (0.6 p / n), J = diag(p) - p p^T
        g_act = 0.6 * p / n
        g = p.copy()
        g[np.arange(n), yb] -= 1
        g /= n
        g += p * (g_act - (g_act * p).sum(1, keepdims=True))
        W = W - LR * (xb.T @ g + 2 * 0.05 * W)
        b = b - LR * (g.sum(0) + 0.02 * np.sign(b))
        norms = np.sqrt(np.sum(W ** 2, axis=0, keepdims=True))
        W = W * np.clip(norms, 0, 0.6) / (1e-7 + norms)
    val, pv = _cross_entropy(W, b, xv.astype(np.float64), yv)
    val_loss = val.mean() + 0.05 * np.sum(W ** 2) + 0.02 * np.sum(np.abs(b)) \
        + 0.3 * np.sum(pv ** 2) / len(yv)

    row, = history_rows(only_run(tmp_path))
    assert float(row["loss"]) == pytest.approx(total / 10, rel=1e-5)
    assert float(row["val_loss"]) == pytest.approx(val_loss, rel=1e-5)
    arrays, _ = checkpoint.load(only_run(tmp_path) / "checkpoints" / "last")
    np.testing.assert_allclose(arrays["params/dense/kernel"], W, rtol=1e-5, atol=1e-6)


def test_every_shape_problem_is_reported_at_once(tmp_path: Path):
    (tmp_path / "multi.yaml").write_text("""
name: multi
data: {dataset: synthetic}
model:
  input: [8]
  layers:
    - dense: {units: 4, kernel_constraint: {max_norm: {axis: 3}}}
    - dense: {units: 3, bias_regularizer: orthogonal_regularizer}
    - reshape: [5, 5]
    - dense: {units: 2}
    - dense: {units: 2, activity_regularizer: orthogonal_regularizer, inputs: dense_1,
              name: side}
    - concatenate: {inputs: [dense_2, side]}
compile: {loss: mse}
""")
    result = nntrain("validate", "multi.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "model.layers[" in line]
    assert "invalid config (4 problems)" in result.output
    assert [line.split(": ")[1] for line in lines] == [
        "model.layers[0]", "model.layers[1]", "model.layers[2]", "model.layers[4]"]
    assert "cannot reshape (3,) (3 values) to (5, 5)" in lines[2]
