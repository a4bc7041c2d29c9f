"""Models built from configs: parameter counts, layer arithmetic against NumPy, dropout,
fused logits and initializers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from nntrain import initializers
from nntrain.build import Setup, prepare
from nntrain.config.loader import ConfigError, load_config

HEAD = "name: t\ndata: {dataset: synthetic}\n"


def setup_of(tmp_path: Path, model: str, compile_: str = "compile: {loss: mse}\n") -> Setup:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent(model) + compile_, encoding="utf-8")
    return prepare(load_config(path))


def run(setup: Setup, params, x, **kwargs):
    outputs, logits, _ = setup.model.apply(params, {}, {"input": jnp.asarray(x)}, **kwargs)
    return outputs, logits


FASHION_MLP = """\
model:
  input: [28, 28]
  layers:
    - flatten
    - dense: {units: 300, activation: relu}
    - dense: {units: 100, activation: relu}
    - dense: {units: 10, activation: softmax}
"""


def test_fashion_mlp_parameter_counts(tmp_path):
    setup = setup_of(tmp_path, FASHION_MLP,
                     "compile: {loss: sparse_categorical_crossentropy}\n")
    rows = setup.model.summary_rows()
    assert [(r.name, r.type, r.output_shape, r.params) for r in rows] == [
        ("flatten", "flatten", (784,), 0),
        ("dense", "dense", (300,), 784 * 300 + 300),
        ("dense_1", "dense", (100,), 300 * 100 + 100),
        ("dense_2", "dense", (10,), 100 * 10 + 10),
    ]
    assert [r.params for r in rows] == [0, 235_500, 30_100, 1_010]
    assert setup.model.trainable_count == 266_610
    assert setup.model.non_trainable_count == 0
    assert setup.model.output_shapes == {"dense_2": (10,)}
    params, state = setup.model.init(jax.random.key(0))
    assert state == {}
    assert params["dense"]["kernel"].shape == (784, 300)
    assert params["dense"]["bias"].shape == (300,)
    assert sum(a.size for a in jax.tree.leaves(params)) == 266_610
    outputs, _ = run(setup, params, np.zeros((5, 28, 28), np.float32))
    assert outputs["dense_2"].shape == (5, 10)
    np.testing.assert_allclose(outputs["dense_2"].sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("activation", "reference"), [
    ("relu", lambda z: np.maximum(z, 0.0)),
    ("sigmoid", lambda z: 1.0 / (1.0 + np.exp(-z))),
    ("tanh", np.tanh),
    (None, lambda z: z),
])
def test_dense_is_matmul_plus_bias_then_activation(tmp_path, activation, reference):
    act = f", activation: {activation}" if activation else ""
    setup = setup_of(tmp_path, f"""\
        model:
          input: [3]
          layers: [{{dense: {{units: 4{act}}}}}]
        """)
    params, _ = setup.model.init(jax.random.key(1))
    bias = np.array([0.5, -1.0, 0.25, 2.0], np.float32)
    params = {"dense": {"kernel": params["dense"]["kernel"], "bias": jnp.asarray(bias)}}
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    outputs, _ = run(setup, params, x)
    kernel = np.asarray(params["dense"]["kernel"], np.float64)
    expected = reference(x.astype(np.float64) @ kernel + bias)
    np.testing.assert_allclose(outputs["dense"], expected, rtol=1e-5, atol=1e-6)


def test_dense_without_bias(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          input: [3]
          layers: [{dense: {units: 2, use_bias: false}}]
        """)
    assert setup.model.trainable_count == 6
    params, _ = setup.model.init(jax.random.key(0))
    assert set(params["dense"]) == {"kernel"}
    x = np.eye(3, dtype=np.float32)
    outputs, _ = run(setup, params, x)
    np.testing.assert_allclose(outputs["dense"], params["dense"]["kernel"], rtol=1e-6)


def test_dense_on_the_last_axis_of_a_sequence(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          input: [5, 3]
          layers: [dense: 2]
        """)
    assert setup.model.output_shapes == {"dense": (5, 2)}
    assert setup.model.trainable_count == 3 * 2 + 2


def test_flatten_and_reshape(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          input: [2, 6]
          layers:
            - reshape: [3, -1]
            - flatten
            - reshape: [4, 3]
        """)
    assert [r.output_shape for r in setup.model.summary_rows()] == [(3, 4), (12,), (4, 3)]
    x = np.arange(2 * 2 * 6, dtype=np.float32).reshape(2, 2, 6)
    params, _ = setup.model.init(jax.random.key(0))
    outputs, _ = run(setup, params, x)
    np.testing.assert_array_equal(outputs["reshape_1"], x.reshape(2, 4, 3))


def test_bad_reshape_is_a_config_error_naming_the_layer(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent("""\
        model:
          input: [4, 2]
          layers:
            - flatten
            - reshape: {target_shape: [3, 3], name: to_square}
        compile: {loss: mse}
        """), encoding="utf-8")
    loaded = load_config(path)
    with pytest.raises(ConfigError) as info:
        prepare(loaded)
    (issue,) = info.value.issues
    assert issue.path == "model.layers[1]"
    assert issue.where == f"{path}:7:7"
    assert "to_square" in issue.message
    assert "(3, 3)" in issue.message
    assert "8 values" in issue.message


def test_rescaling_takes_uint8_pixels(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          inputs: {input: {shape: [4], dtype: uint8}}
          layers:
            - rescaling: {scale: 1/255, offset: -0.5}
        """)
    x = np.array([[0, 255, 51, 128]], np.uint8)
    outputs, _ = run(setup, {}, x)
    y = outputs["rescaling"]
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, x.astype(np.float64) / 255 - 0.5, rtol=1e-6, atol=1e-7)


DROPOUT = """\
model:
  input: [20000]
  layers: [dropout: 0.3]
"""


def test_dropout_is_identity_in_inference(tmp_path):
    setup = setup_of(tmp_path, DROPOUT)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(2, 20000)).astype(np.float32)
    outputs, _ = run(setup, {}, x, training=False, rng=jax.random.key(0))
    np.testing.assert_array_equal(outputs["dropout"], x)


def test_dropout_in_training_drops_rate_and_scales_survivors(tmp_path):
    setup = setup_of(tmp_path, DROPOUT)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(2, 20000)).astype(np.float32)
    y1 = np.asarray(run(setup, {}, x, training=True, rng=jax.random.key(1))[0]["dropout"])
    dropped = y1 == 0.0
    # 40,000 Bernoulli(0.3) draws: standard deviation 0.0023
    assert abs(dropped.mean() - 0.3) < 0.012
    np.testing.assert_allclose(y1[~dropped], x[~dropped] / 0.7, rtol=1e-6)
    y2 = np.asarray(run(setup, {}, x, training=True, rng=jax.random.key(2))[0]["dropout"])
    assert ((y2 == 0.0) != dropped).mean() > 0.3  # independent masks differ in ~42% of places
    y1_again = np.asarray(run(setup, {}, x, training=True, rng=jax.random.key(1))[0]["dropout"])
    np.testing.assert_array_equal(y1_again, y1)


@pytest.mark.parametrize(("activation", "squash"), [
    ("softmax", lambda z: np.exp(z - z.max(-1, keepdims=True))
     / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    ("sigmoid", lambda z: 1.0 / (1.0 + np.exp(-z))),
])
def test_logits_for_returns_pre_activation_values(tmp_path, activation, squash):
    setup = setup_of(tmp_path, f"""\
        model:
          input: [5]
          layers:
            - dense: {{units: 8, activation: relu}}
            - dense: {{units: 3, activation: {activation}}}
        """)
    params, _ = setup.model.init(jax.random.key(3))
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    outputs, logits = run(setup, params, x, logits_for={"dense_1"})
    assert set(logits) == {"dense_1"}
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    hidden = np.maximum(x @ p["dense"]["kernel"] + p["dense"]["bias"], 0.0)
    z = hidden @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    np.testing.assert_allclose(logits["dense_1"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["dense_1"], squash(z), rtol=1e-5, atol=1e-6)
    plain, no_logits = run(setup, params, x)
    assert no_logits == {}
    np.testing.assert_allclose(plain["dense_1"], outputs["dense_1"], rtol=1e-6)


def test_logits_are_not_split_off_a_relu_output(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          input: [5]
          layers: [{dense: {units: 3, activation: relu}}]
        """)
    params, _ = setup.model.init(jax.random.key(3))
    x = np.ones((2, 5), np.float32)
    _, logits = run(setup, params, x, logits_for={"dense"})
    assert logits == {}


def test_glorot_uniform_bound_and_zero_bias(tmp_path):
    setup = setup_of(tmp_path, """\
        model:
          input: [784]
          layers: [dense: 300]
        """)
    params, _ = setup.model.init(jax.random.key(0))
    kernel = np.asarray(params["dense"]["kernel"])
    bound = np.sqrt(6.0 / (784 + 300))
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound  # 235,200 draws reach the edge
    assert abs(kernel.mean()) < 0.01 * bound
    np.testing.assert_allclose(kernel.var(), bound**2 / 3, rtol=0.02)  # uniform's variance
    np.testing.assert_array_equal(params["dense"]["bias"], np.zeros(300))
    other, _ = setup.model.init(jax.random.key(1))
    assert not np.array_equal(other["dense"]["kernel"], kernel)


@pytest.mark.parametrize(("name", "low", "high", "std"), [
    ("he_uniform", -np.sqrt(6 / 400), np.sqrt(6 / 400), np.sqrt(2 / 400)),
    ("random_uniform", -0.05, 0.05, 0.1 / np.sqrt(12)),
    ("random_normal", -np.inf, np.inf, 0.05),
])
def test_initializer_ranges_follow_keras(name, low, high, std):
    values = np.asarray(initializers.get(name)(jax.random.key(0), (400, 300), jnp.float32))
    assert values.min() >= low and values.max() <= high
    assert abs(values.mean()) < 0.02 * std
    np.testing.assert_allclose(values.std(), std, rtol=0.02)


@pytest.mark.parametrize(("name", "limit", "std"), [
    # Keras's fans for a vector of n: fan_in = fan_out = n
    ("glorot_uniform", np.sqrt(3 / 20_000), np.sqrt(1 / 20_000)),
    ("he_normal", 2 * np.sqrt(2 / 20_000) / 0.87962566, np.sqrt(2 / 20_000)),
    ("lecun_uniform", np.sqrt(3 / 20_000), np.sqrt(1 / 20_000)),
])
def test_variance_scaling_of_a_vector_uses_keras_fans(name, limit, std):
    values = np.asarray(initializers.get(name)(jax.random.key(0), (20_000,), jnp.float32))
    assert values.shape == (20_000,)
    assert np.abs(values).max() <= limit * (1 + 1e-6)
    np.testing.assert_allclose(values.std(), std, rtol=0.03)
    assert initializers.get(name)(jax.random.key(0), (), jnp.float32).shape == ()


def _drawn(entry: str, shape=(400, 300), key: int = 0) -> np.ndarray:
    """An initializer written as in a config, drawn from `key`."""
    from nntrain.config.layers import DenseArgs

    initializer = DenseArgs.model_validate({"units": 1, "kernel_initializer": yaml.safe_load(
        entry)}).kernel_initializer
    return np.asarray(initializers.get(initializer)(jax.random.key(key), shape, jnp.float32))


@pytest.mark.parametrize(("entry", "low", "high", "mean", "std"), [
    ("{random_normal: {mean: 1.0, stddev: 0.5}}", -np.inf, np.inf, 1.0, 0.5),
    ("{class_name: RandomUniform, config: {minval: 2, maxval: 4, seed: null}}", 2, 4, 3,
     2 / np.sqrt(12)),
    ("{truncated_normal: {mean: -1, stddev: 0.1}}", -1.2, -0.8, -1, 0.1 * 0.87962566),
    # He's initialization with fan_avg (Hands-On ML, ch. 11): limit sqrt(3 * 2 / 350)
    ("{variance_scaling: {scale: 2.0, mode: fan_avg, distribution: uniform}}",
     -np.sqrt(6 / 350), np.sqrt(6 / 350), 0, np.sqrt(2 / 350)),
    ("{VarianceScaling: {distribution: untruncated_normal}}", -np.inf, np.inf, 0,
     np.sqrt(1 / 400)),
    # Keras reads the distribution in any case, and `normal` as the truncated one
    ("{variance_scaling: {distribution: Normal}}", -2 / np.sqrt(400) / 0.87962566,
     2 / np.sqrt(400) / 0.87962566, 0, np.sqrt(1 / 400)),
])
def test_initializers_take_keras_arguments(entry, low, high, mean, std):
    values = _drawn(entry)
    assert values.min() >= low and values.max() <= high
    assert abs(values.mean() - mean) < 0.02 * std + 1e-6
    np.testing.assert_allclose(values.std(), std, rtol=0.02)


def test_constant_identity_and_orthogonal_gain():
    np.testing.assert_array_equal(_drawn("{constant: 0.25}", (2, 3)), np.full((2, 3), 0.25))
    np.testing.assert_array_equal(_drawn("{Constant: {value: -2}}", (4,)), np.full(4, -2.0))
    np.testing.assert_array_equal(_drawn("{identity: {gain: 3}}", (2, 3)), 3 * np.eye(2, 3))
    rows = _drawn("{orthogonal: {gain: 2}}", (5, 5))
    np.testing.assert_allclose(rows @ rows.T, 4 * np.eye(5), atol=1e-5)


def test_a_seeded_initializer_draws_the_same_weights_from_any_key():
    """Keras's `seed`: the weight is the seed's, whatever the config's seed gives the layer."""
    seeded = "{glorot_uniform: {seed: 7}}"
    np.testing.assert_array_equal(_drawn(seeded, key=0), _drawn(seeded, key=1))
    assert not np.array_equal(_drawn(seeded), _drawn("{glorot_uniform: {seed: 8}}"))
    assert not np.array_equal(_drawn("glorot_uniform", key=0), _drawn("glorot_uniform", key=1))


def test_keras_initializer_defaults_keep_the_values_drawn_before_arguments():
    """The defaults written out draw what the bare names did (a seed gives the weights it
    always gave): random_normal 0.05, random_uniform ±0.05, truncated_normal 0.05."""
    key, shape = jax.random.key(5), (30, 20)
    np.testing.assert_array_equal(_drawn("random_normal", shape, 5),
                                  np.asarray(jax.random.normal(key, shape)) * np.float32(0.05))
    np.testing.assert_array_equal(
        _drawn("uniform", shape, 5),
        np.asarray(jax.random.uniform(key, shape)) * np.float32(0.1) - np.float32(0.05))
    np.testing.assert_array_equal(
        _drawn("truncated_normal", shape, 5),
        np.asarray(jax.random.truncated_normal(key, -2.0, 2.0, shape)) * np.float32(0.05))


@pytest.mark.parametrize(("entry", "message"), [
    ("{random_uniform: {minval: 1, maxval: 0}}", "minval 1.0 is above maxval 0.0"),
    ("{random_normal: {stdev: 1}}", "unknown key 'stdev'"),
    ("{variance_scaling: {mode: fan_out_avg}}", "'fan_in', 'fan_out' or 'fan_avg'"),
    ("0.5", "name the initializer, e.g. {constant: 0.5}"),
    ("{he_normal: {seed: -1}}", "greater than or equal to 0"),
])
def test_bad_initializer_arguments_are_config_errors(tmp_path, entry, message):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent(f"""\
        model:
          input: [4]
          layers: [dense: {{units: 3, kernel_initializer: {entry}}}]
        compile: {{loss: mse}}
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.path.startswith("model.layers[0].dense.kernel_initializer"), issue.path
    assert message in issue.message, issue.message
    if "stdev" in entry:
        assert issue.suggestion == "stddev"


def test_identity_needs_a_matrix(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent("""\
        model:
          input: [8, 8, 1]
          layers: [conv2d: {filters: 2, kernel_size: 3, kernel_initializer: identity}]
        compile: {loss: mse}
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        prepare(load_config(path))
    message = info.value.issues[0].message
    assert "the identity initializer needs exactly 2 dimensions (use it for a dense layer's " \
        "kernel or a recurrent kernel; glorot_uniform for convolution kernels)" in message


def test_orthogonal_bias_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent("""\
        model:
          input: [4]
          layers: [dense: {units: 3, bias_initializer: orthogonal}]
        compile: {loss: mse}
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        prepare(load_config(path))
    (issue,) = info.value.issues
    assert issue.path == "model.layers[0]"
    assert "weight 'bias' of shape (3,)" in issue.message
    assert "orthogonal initializer needs 2 or more dimensions" in issue.message


EVERY_LAYER = """\
model:
  inputs: {ids: {shape: [6], dtype: int32}, image: {shape: [8, 8, 2]}}
  layers:
    - embedding: {input_dim: 20, output_dim: 4, inputs: ids}
    - conv1d: {filters: 3, kernel_size: 2}
    - layer_normalization: {}
    - global_average_pooling1d: {name: seq}
    - normalization: {inputs: image}
    - conv2d: {filters: 5, kernel_size: 3, padding: same}
    - batch_normalization: {}
    - max_pooling2d: {}
    - average_pooling2d: {}
    - global_max_pooling2d: {}
    - dense: {units: 3, name: img}
    - concatenate: {inputs: [seq, img]}
    - dense: {units: 2, use_bias: false}
"""


def test_declared_weights_match_the_created_ones(tmp_path):
    """Shapes and counts come from each layer's `build`, without JAX; `init` must create
    exactly those weights."""
    setup = setup_of(tmp_path, EVERY_LAYER, "compile: {loss: mse}\n")
    params, state = setup.model.init(jax.random.key(0))
    created = {name: sum(a.size for a in jax.tree.leaves(p)) for name, p in params.items()}
    declared = {r.name: r.params for r in setup.model.summary_rows() if r.params}
    assert created == declared
    fixed = {name: sum(a.size for a in jax.tree.leaves(s)) for name, s in state.items()}
    assert fixed == {r.name: r.non_trainable for r in setup.model.summary_rows()
                     if r.non_trainable}
    assert setup.model.trainable_count == 20 * 4 + (2 * 4 * 3 + 3) + 2 * 3 + \
        (3 * 3 * 2 * 5 + 5) + 2 * 5 + (5 * 3 + 3) + 6 * 2
    assert state["normalization"]["count"].dtype == jnp.int32
    assert params["batch_normalization"]["gamma"].shape == (5,)
    assert np.all(np.asarray(state["batch_normalization"]["moving_variance"]) == 1.0)
