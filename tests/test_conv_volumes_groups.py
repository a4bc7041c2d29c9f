"""3-d layers (conv3d, conv3d_transpose, pooling, resizing), conv1d_transpose and grouped
convolutions: Keras's weight shapes and parameter counts, values against plain NumPy or the
2-d layers, errors, and a volume classifier trained from the CLI."""

from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain
from layerrun import run_layer as _run

rng = np.random.default_rng(0)
VOLUMES = rng.normal(size=(2, 4, 5, 6, 3)).astype(np.float32)


def _count(made: dict) -> int:
    return sum(int(np.prod(w.shape)) for w in made.values())


@pytest.mark.parametrize(("name", "input_shape", "args", "kernel", "count"), [
    # Keras 3.15's kernel shapes and count_params()
    ("conv2d", (8, 8, 6), {"filters": 9, "kernel_size": 3, "groups": 3}, (3, 3, 2, 9), 171),
    ("conv3d", (4, 8, 8, 4), {"filters": 6, "kernel_size": [2, 3, 3], "groups": 2},
     (2, 3, 3, 2, 6), 222),
    ("conv3d_transpose", (4, 8, 8, 2), {"filters": 5, "kernel_size": 3}, (3, 3, 3, 5, 2), 275),
    ("conv1d_transpose", (8, 2), {"filters": 5, "kernel_size": 3}, (3, 5, 2), 35),
])
def test_kernels_and_parameter_counts_are_keras(name, input_shape, args, kernel, count):
    _, made = _run(name, np.zeros((1, *input_shape), np.float32), **args)
    assert made["kernel"].shape == kernel
    assert _count(made) == count


@pytest.mark.parametrize(("name", "x", "args"), [
    ("conv1d", VOLUMES[:, 0, 0], {"filters": 6, "kernel_size": 2, "padding": "causal"}),
    ("conv2d", VOLUMES[:, 0], {"filters": 6, "kernel_size": 3, "strides": 2}),
    ("conv3d", VOLUMES, {"filters": 6, "kernel_size": [2, 3, 3], "padding": "same"}),
])
def test_a_grouped_convolution_is_each_group_convolved_on_its_own(name, x, args):
    """groups: 3 equals three convolutions, one per third of the channels with its third of
    the filters, concatenated (Keras's definition)."""
    y, made = _run(name, x, groups=3, **args)
    kernel, bias = np.asarray(made["kernel"]), np.asarray(made["bias"])
    parts = []
    for g in range(3):
        filters = slice(2 * g, 2 * g + 2)
        part, _ = _run(name, x[..., g:g + 1], {"kernel": jnp.asarray(kernel[..., filters]),
                                               "bias": jnp.asarray(bias[filters])},
                       **{**args, "filters": 2})
        parts.append(part)
    np.testing.assert_allclose(y, np.concatenate(parts, axis=-1), rtol=1e-5, atol=1e-6)


def test_conv3d_is_a_sum_over_the_window():
    """Each output value is sum(window * kernel) + bias, the window stepping by the strides."""
    kernel = rng.normal(size=(2, 2, 3, 3, 2)).astype(np.float32)
    bias = np.array([0.5, -1.0], np.float32)
    y, _ = _run("conv3d", VOLUMES, {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)},
                filters=2, kernel_size=[2, 2, 3], strides=[1, 2, 3])
    assert y.shape == (2, 3, 2, 2, 2)
    expected = np.zeros(y.shape, np.float32)
    for d in range(3):
        for h in range(2):
            for w in range(2):
                window = VOLUMES[:, d:d + 2, 2 * h:2 * h + 2, 3 * w:3 * w + 3]
                expected[:, d, h, w] = np.einsum("ndhwc,dhwcf->nf", window, kernel) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("args", "expected"), [
    # Keras 3.15's Conv1DTranspose(1, 3, strides=2), kernel [0, 1, 2], input [1, 2, 3]
    ({"padding": "valid"}, [0, 1, 2, 2, 4, 3, 6]),
    ({"padding": "same"}, [0, 1, 2, 2, 4, 3]),
    ({"padding": "valid", "output_padding": 1}, [0, 1, 2, 2, 4, 3, 6, 0]),
])
def test_conv1d_transpose_values_are_keras(args, expected):
    x = np.array([[[1.0], [2.0], [3.0]]], np.float32)
    kernel = jnp.arange(3.0).reshape(3, 1, 1)
    y, _ = _run("conv1d_transpose", x, {"kernel": kernel}, filters=1, kernel_size=3,
                strides=2, use_bias=False, **args)
    np.testing.assert_array_equal(y[0, :, 0], expected)


def test_conv3d_transpose_is_the_adjoint_of_conv3d():
    """<conv(x), y> == <x, conv_transpose(y)> for the same kernel."""
    kernel = rng.normal(size=(3, 3, 3, 3, 4)).astype(np.float32)  # (kd, kh, kw, in, out)
    conv, _ = _run("conv3d", VOLUMES, {"kernel": jnp.asarray(kernel)}, filters=4,
                   kernel_size=3, strides=2, padding="same", use_bias=False)
    y = rng.normal(size=conv.shape).astype(np.float32)
    back, _ = _run("conv3d_transpose", y, {"kernel": jnp.asarray(kernel)}, filters=3,
                   kernel_size=3, strides=2, padding="same", use_bias=False,
                   output_padding=[1, 0, 1])
    assert back.shape == VOLUMES.shape
    np.testing.assert_allclose((conv * y).sum(), (VOLUMES * back).sum(), rtol=1e-4)


def test_pooling_3d_matches_numpy():
    x = VOLUMES[:, :4, :4, :6]
    tiles = x.reshape(2, 2, 2, 2, 2, 3, 2, 3)
    np.testing.assert_array_equal(_run("max_pooling3d", x)[0], tiles.max(axis=(2, 4, 6)))
    np.testing.assert_allclose(_run("average_pooling3d", x)[0], tiles.mean(axis=(2, 4, 6)),
                               rtol=1e-6, atol=1e-7)  # a GPU sums the window in its own order
    # overlapping windows: a window's maximum, stepping by one
    y, _ = _run("max_pooling3d", x, pool_size=[2, 3, 2], strides=1)
    assert y.shape == (2, 3, 2, 5, 3)
    np.testing.assert_array_equal(y[:, 1, 0, 2], x[:, 1:3, 0:3, 2:4].max(axis=(1, 2, 3)))
    np.testing.assert_allclose(_run("global_average_pooling3d", x)[0], x.mean(axis=(1, 2, 3)),
                               rtol=1e-6)
    y, _ = _run("global_max_pooling3d", x, keepdims=True)
    np.testing.assert_array_equal(y, x.max(axis=(1, 2, 3), keepdims=True))


@pytest.mark.parametrize(("name", "args", "reference"), [
    ("up_sampling3d", {"size": [1, 2, 3]},
     lambda x: np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)),
    ("zero_padding3d", {}, lambda x: np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))),
    ("zero_padding3d", {"padding": [1, 0, 2]},
     lambda x: np.pad(x, ((0, 0), (1, 1), (0, 0), (2, 2), (0, 0)))),
    ("zero_padding3d", {"padding": [[1, 0], [0, 2], [3, 1]]},
     lambda x: np.pad(x, ((0, 0), (1, 0), (0, 2), (3, 1), (0, 0)))),
    ("zero_padding3d", {"padding": [1, [1, 2], 0]},  # Keras's mixed form
     lambda x: np.pad(x, ((0, 0), (1, 1), (1, 2), (0, 0), (0, 0)))),
    ("cropping3d", {"cropping": [[0, 1], 1, [2, 0]]}, lambda x: x[:, :-1, 1:-1, 2:]),
    ("cropping3d", {}, lambda x: x[:, 1:-1, 1:-1, 1:-1]),
    ("cropping3d", {"cropping": [[1, 0], [0, 2], [3, 1]]}, lambda x: x[:, 1:, :-2, 3:-1]),
])
def test_3d_resizing_matches_numpy(name, args, reference):
    y, _ = _run(name, VOLUMES, **args)
    np.testing.assert_array_equal(y, reference(VOLUMES))


def test_a_volume_classifier_trains_evaluates_and_predicts_from_the_cli(tmp_path):
    """Bright cubes in one corner or the other of a 4x6x6 volume, told apart by a grouped
    conv3d, 3-d pooling and a dense head."""
    n = 192
    x = rng.normal(scale=0.3, size=(n, 4, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    x[y == 0, :2, :3, :3] += 1.0
    x[y == 1, 2:, 3:, 3:] += 1.0
    np.savez(tmp_path / "volumes.npz", x=x, y=y)
    config = {"name": "volumes", "data": {"train": "volumes.npz", "validation": {"last": 32}},
              "model": {"input": [4, 6, 6, 2], "layers": [
                  {"conv3d": {"filters": 4, "kernel_size": 3, "padding": "same", "groups": 2,
                              "activation": "relu"}},
                  {"max_pooling3d": 2},
                  {"global_average_pooling3d": {}},
                  {"dense": {"units": 2, "activation": "softmax"}}]},
              "compile": {"loss": "sparse_categorical_crossentropy",
                          "optimizer": {"adam": 0.02}, "metrics": ["accuracy"]},
              "fit": {"epochs": 8, "batch_size": 32}}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", str(tmp_path / "v.yaml"), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "volumes").iterdir()
    summary = (run / "summary.txt").read_text()  # Keras's class names
    assert "(Conv3D)" in summary and "(MaxPooling3D)" in summary
    assert "(GlobalAveragePooling3D)" in summary
    with (run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["val_accuracy"]) >= 0.9
    result = nntrain("evaluate", str(run), "--split", "validation", "--json")
    assert result.exit_code == 0, result.output
    assert '"accuracy"' in result.output
    result = nntrain("predict", str(run), str(tmp_path / "volumes.npz"), "--output",
                     str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    with (tmp_path / "p.csv").open() as f:
        assert len(list(csv.DictReader(f))) == n
