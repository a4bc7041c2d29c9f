"""Activation layers (relu, leaky_relu, prelu, elu), noise layers (alpha_dropout,
gaussian_noise, gaussian_dropout, spatial_dropout1d/2d/3d), repeat_vector and permute: Keras's
values, training-only behaviour and the statistics the noise must keep."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain

from nntrain.config.layers import LAYERS
from nntrain.layers import LAYER_TYPES

X = np.array([[-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 7.0]], np.float32)


def _layer(name: str, **args):
    kind = LAYERS.canonical(name)
    return LAYER_TYPES[kind](LAYERS.args[kind](**args))


def _apply(name: str, x: np.ndarray, params: dict | None = None, *, training: bool = False,
           rng: jax.Array | None = None, **args) -> np.ndarray:
    layer = _layer(name, **args)
    made, state, shape = layer.init(jax.random.key(0), x.shape[1:])
    y, _ = layer.apply(made if params is None else params, state, jnp.asarray(x),
                       training=training, rng=rng)
    assert y.shape[1:] == shape
    return np.asarray(y)


@pytest.mark.parametrize(("name", "args", "expected"), [  # Keras 3.15's layers
    ("relu", {}, [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 7.0]),
    ("relu", {"max_value": 6.0, "negative_slope": 0.1, "threshold": 0.5},
     [-0.35, -0.15, -0.1, -0.05, 0.0, 1.0, 2.0, 6.0]),
    ("leaky_relu", {}, [-0.9, -0.3, -0.15, 0.0, 0.5, 1.0, 2.0, 7.0]),
    ("leaky_re_lu", {"negative_slope": 0.1}, [-0.3, -0.1, -0.05, 0.0, 0.5, 1.0, 2.0, 7.0]),
    ("elu", {"alpha": 0.5},
     [-0.475106, -0.31606, -0.196735, 0.0, 0.5, 1.0, 2.0, 7.0]),
])
def test_activation_layers_match_keras(name, args, expected):
    np.testing.assert_allclose(_apply(name, X, **args)[0], expected, atol=1e-6)


def test_prelu_slopes_are_trained_weights():
    alpha = jnp.linspace(0.1, 0.8, 8)
    y = _apply("prelu", X, {"alpha": alpha})
    np.testing.assert_allclose(y[0], [-0.3, -0.2, -0.15, 0.0, 0.5, 1.0, 2.0, 7.0], atol=1e-6)
    params, _, _ = _layer("prelu").init(jax.random.key(0), (8,))
    np.testing.assert_array_equal(params["alpha"], np.zeros(8))  # starts as a relu
    shared, _, _ = _layer("prelu", shared_axes=[1]).init(jax.random.key(0), (3, 2))
    assert shared["alpha"].shape == (1, 2)  # one slope per channel, as Keras's shared_axes


def test_noise_layers_do_nothing_outside_training():
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    for name, args in [("alpha_dropout", {"rate": 0.5}), ("gaussian_noise", {"stddev": 1.0}),
                       ("gaussian_dropout", {"rate": 0.5}), ("spatial_dropout1d", {"rate": 0.5})]:
        np.testing.assert_array_equal(_apply(name, x, rng=jax.random.key(1), **args), x)


def test_gaussian_noise_and_dropout_have_the_stated_spread():
    x = np.ones((1, 200_000), np.float32)
    noisy = _apply("gaussian_noise", x, training=True, rng=jax.random.key(1), stddev=0.5) - 1
    assert abs(noisy.mean()) < 0.01 and abs(noisy.std() - 0.5) < 0.01
    scaled = _apply("gaussian_dropout", x, training=True, rng=jax.random.key(1), rate=0.2)
    assert abs(scaled.mean() - 1) < 0.01 and abs(scaled.std() - 0.5) < 0.01  # sqrt(.2/.8)


def test_alpha_dropout_keeps_a_selu_networks_mean_and_variance():
    x = np.random.default_rng(0).normal(size=(1, 400_000)).astype(np.float32)
    y = _apply("alpha_dropout", x, training=True, rng=jax.random.key(1), rate=0.3)
    assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01
    # every dropped value becomes the same number: SELU's saturation, mapped affinely
    values, counts = np.unique(y, return_counts=True)
    assert counts.max() == pytest.approx(0.3 * x.size, rel=0.02)
    # a = (0.7 * (1 + 0.3 * 1.7581**2)) ** -0.5 = 0.86095, b = 0.86095 * 1.7581 * 0.3 = 0.45409
    assert values[counts.argmax()] == pytest.approx(0.86095 * -1.7581 + 0.45409, abs=1e-4)


@pytest.mark.parametrize(("name", "shape"), [("spatial_dropout1d", (64, 10, 8)),
                                             ("spatial_dropout2d", (64, 4, 5, 8)),
                                             ("spatial_dropout3d", (64, 2, 3, 4, 8))])
def test_spatial_dropout_drops_whole_channels(name, shape):
    x = np.ones(shape, np.float32)
    y = _apply(name, x, training=True, rng=jax.random.key(3), rate=0.25)
    per_channel = y.reshape(shape[0], -1, shape[-1])
    np.testing.assert_allclose(np.unique(per_channel), [0.0, 4.0 / 3.0])
    assert (per_channel.min(axis=1) == per_channel.max(axis=1)).all()  # a channel: all or none
    assert abs((per_channel[:, 0] == 0).mean() - 0.25) < 0.05


def test_dropout_noise_shape_shares_draws_along_its_1_axes():
    """Keras's noise_shape: [null, 1, null] drops the same features at every step of an
    example; [1, null, null] drops the same values in every example of the batch."""
    x = np.ones((64, 10, 8), np.float32)
    y = _apply("dropout", x, training=True, rng=jax.random.key(2), rate=0.25,
               noise_shape=[None, 1, None])
    np.testing.assert_allclose(np.unique(y), [0.0, 4.0 / 3.0])
    assert (y.min(axis=1) == y.max(axis=1)).all()  # each step: the same mask
    assert abs((y[:, 0] == 0).mean() - 0.25) < 0.05
    y = _apply("dropout", x, training=True, rng=jax.random.key(2), rate=0.25,
               noise_shape=[1, None, None])
    assert (y == y[:1]).all() and 0 < (y == 0).mean() < 0.5


def test_repeat_vector_and_permute_match_numpy():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_apply("repeat_vector", x, n=4),
                                  np.repeat(x[:, None], 4, axis=1))
    cube = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(_apply("permute", cube, dims=[3, 1, 2]),
                                  cube.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(("layer", "message"), [
    ({"permute": [1, 1]}, "dims [1, 1] must order the axes 1..2 (the batch's is 0), each once"),
    ({"repeat_vector": 3}, "it takes vectors, (features,); got (4, 3)"),
    ({"spatial_dropout2d": 0.5}, "spatial_dropout2d takes 3-d examples (height, width, "
                                 "channels)"),
    ({"prelu": {"shared_axes": 0}}, "axis 0 is the batch axis"),
    ({"relu": {"threshold": -1}}, "threshold"),  # Keras's ReLU refuses it too
    ({"dropout": {"rate": 0.5, "noise_shape": [None, 1]}},
     "noise_shape [null, 1] has 2 sizes; the input has 3 axes, the batch's first: "
     "[null, 4, 3]"),
    ({"dropout": {"rate": 0.5, "noise_shape": [32, 1, None]}},
     "noise_shape's first size is the batch's: give null"),
    ({"dropout": {"rate": 0.5, "noise_shape": [None, 2, None]}},
     "axis 1 has 4 values, so its size is null, 4 or 1"),
])
def test_bad_configs_are_refused(tmp_path, layer, message):
    config = {"name": "bad", "data": {"dataset": "synthetic"},
              "model": {"input": [4, 3], "layers": [layer, "flatten", {"dense": 1}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2
    assert message in result.output


def test_a_selu_network_with_alpha_dropout_trains_from_the_cli(tmp_path):
    config = {"name": "selu", "seed": 3,
              "data": {"dataset": "synthetic", "validation": {"last": 64}},
              "model": {"input": [8], "layers": [
                  {"dense": {"units": 32, "activation": "selu",
                             "kernel_initializer": "lecun_normal"}},
                  {"alpha_dropout": 0.1}, {"dense": 32}, "prelu", {"gaussian_noise": 0.1},
                  {"leaky_relu": 0.2}, {"dense": {"units": 3, "activation": "softmax"}}]},
              "compile": {"loss": "sparse_categorical_crossentropy", "optimizer": "adam",
                          "metrics": ["accuracy"]},
              "fit": {"epochs": 20}}
    (tmp_path / "selu.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", str(tmp_path / "selu.yaml"), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    summary = nntrain("summary", str(tmp_path / "selu.yaml"))
    assert "prelu (PReLU)" in summary.output and "leaky_relu (LeakyReLU)" in summary.output
