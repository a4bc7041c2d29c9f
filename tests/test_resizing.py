"""conv2d_transpose, up_sampling, zero_padding and cropping: Keras's output shapes and values,
argument forms and errors."""

from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain
from layerrun import run_layer as _run

IMAGES = np.sin(np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2) * 0.7).astype(np.float32)
STEPS = np.sin(np.arange(2 * 5 * 2).reshape(2, 5, 2) * 0.7).astype(np.float32)


def test_conv2d_transpose_places_the_kernel_at_every_stride():
    """Keras 3's Conv2DTranspose(1, 2, strides=2): each pixel becomes the kernel scaled by it."""
    x = np.array([[[[1.0], [2.0]], [[3.0], [4.0]]]], np.float32)
    kernel = jnp.asarray([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    y, _ = _run("conv2d_transpose", x, {"kernel": kernel}, filters=1, kernel_size=2, strides=2,
                use_bias=False)
    np.testing.assert_array_equal(y[0, :, :, 0], [[1, 10, 2, 20], [100, 1000, 200, 2000],
                                                  [3, 30, 4, 40], [300, 3000, 400, 4000]])


@pytest.mark.parametrize(("args", "shape", "expected"), [
    ({"padding": "same"}, (4, 4),  # Keras 3.15
     [[0, 1, 2, 2], [3, 4, 11, 8], [6, 10, 26, 18], [9, 12, 27, 16]]),
    ({"padding": "valid"}, (5, 5), None),
    ({"padding": "valid", "output_padding": 1}, (6, 6), None),
    ({"padding": "same", "output_padding": 1}, (4, 4), None),
])
def test_conv2d_transpose_sizes_and_values_are_keras(args, shape, expected):
    x = np.array([[[[1.0], [2.0]], [[3.0], [4.0]]]], np.float32)
    kernel = jnp.arange(9.0).reshape(3, 3, 1, 1)
    y, made = _run("conv2d_transpose", x, {"kernel": kernel}, filters=1, kernel_size=3,
                   strides=2, use_bias=False, **args)
    assert made["kernel"].shape == (3, 3, 1, 1)
    assert y.shape[1:3] == shape
    if expected is not None:
        np.testing.assert_array_equal(y[0, :, :, 0], expected)


def test_conv2d_transpose_is_the_adjoint_of_conv2d():
    """<conv(x), y> == <x, conv_transpose(y)> for the same kernel: the transposed convolution
    is the convolution's gradient, which is what makes it the decoder's upsampling."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # conv2d: (kh, kw, in, out)
    x = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
    conv, _ = _run("conv2d", x, {"kernel": jnp.asarray(kernel)}, filters=4, kernel_size=3,
                   strides=2, padding="same", use_bias=False)
    y = rng.normal(size=conv.shape).astype(np.float32)
    # conv2d_transpose's kernel is (kh, kw, filters, in): the same array, read the other way
    back, _ = _run("conv2d_transpose", y, {"kernel": jnp.asarray(kernel)}, filters=2,
                   kernel_size=3, strides=2, padding="same", use_bias=False)
    assert back.shape == x.shape
    np.testing.assert_allclose((conv * y).sum(), (x * back).sum(), rtol=1e-4)


def test_conv2d_transpose_counts_keras_parameters():
    _, made = _run("conv2d_transpose", IMAGES, filters=5, kernel_size=3)
    assert made["kernel"].shape == (3, 3, 5, 2) and made["bias"].shape == (5,)


@pytest.mark.parametrize(("name", "x", "args", "reference"), [
    ("up_sampling1d", STEPS, {"size": 3}, lambda x: np.repeat(x, 3, axis=1)),
    ("up_sampling2d", IMAGES, {"size": [2, 3]},
     lambda x: np.repeat(np.repeat(x, 2, axis=1), 3, axis=2)),
    ("zero_padding1d", STEPS, {}, lambda x: np.pad(x, ((0, 0), (1, 1), (0, 0)))),
    ("zero_padding1d", STEPS, {"padding": [1, 2]}, lambda x: np.pad(x, ((0, 0), (1, 2), (0, 0)))),
    ("zero_padding2d", IMAGES, {"padding": [1, 2]},
     lambda x: np.pad(x, ((0, 0), (1, 1), (2, 2), (0, 0)))),
    ("zero_padding2d", IMAGES, {"padding": [[0, 1], [2, 0]]},
     lambda x: np.pad(x, ((0, 0), (0, 1), (2, 0), (0, 0)))),
    ("cropping1d", STEPS, {}, lambda x: x[:, 1:-1]),
    ("cropping1d", STEPS, {"cropping": [1, 2]}, lambda x: x[:, 1:-2]),
    ("cropping2d", IMAGES, {"cropping": [[1, 0], [0, 2]]}, lambda x: x[:, 1:, :-2]),
    ("cropping2d", IMAGES, {"cropping": 1}, lambda x: x[:, 1:-1, 1:-1]),
    ("zero_padding2d", IMAGES, {"padding": [1, [0, 2]]},  # Keras's mixed form
     lambda x: np.pad(x, ((0, 0), (1, 1), (0, 2), (0, 0)))),
    ("cropping2d", IMAGES, {}, lambda x: x),
])
def test_resizing_layers_match_numpy(name, x, args, reference):
    y, _ = _run(name, x, **args)
    np.testing.assert_array_equal(y, reference(x))


def test_bilinear_up_sampling_interpolates_between_pixels():
    """Keras's UpSampling2D(2, interpolation="bilinear"): half-pixel centres, edges held."""
    x = np.array([[[[0.0], [4.0]], [[8.0], [12.0]]]], np.float32)
    y, _ = _run("up_sampling2d", x, size=2, interpolation="bilinear")
    np.testing.assert_allclose(y[0, :, :, 0], [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10],
                                               [8, 9, 11, 12]])


@pytest.mark.parametrize(("interpolation", "first_row"), [
    # Keras 3.15 (JAX): UpSampling2D((2, 2), interpolation=...) of sin(0.7 * arange(12)),
    # shaped (1, 3, 4, 1)
    ("bicubic", [-0.096755, 0.105836, 0.534751, 0.873211, 1.091057, 1.150691, 1.058589,
                 1.015188]),
    ("Lanczos3", [-0.175134, 0.057002, 0.514739, 1.021155, 1.257475, 1.28284, 1.221439,
                  1.146538]),
    ("lanczos5", [-0.235652, 0.033965, 0.497886, 1.069584, 1.340844, 1.295954, 1.25321,
                  1.24047]),
])
def test_up_sampling_interpolates_as_keras_on_jax(interpolation, first_row):
    x = np.sin(np.arange(12).reshape(1, 3, 4, 1) * 0.7).astype(np.float32)
    y, _ = _run("up_sampling2d", x, size=2, interpolation=interpolation)
    assert y.shape == (1, 6, 8, 1)
    np.testing.assert_allclose(y[0, 0, :, 0], first_row, atol=2e-6)


@pytest.mark.parametrize(("layer", "message"), [
    ({"cropping2d": 2}, "cropping 2 leaves nothing of (3, 4)"),
    ({"up_sampling1d": 2}, "up_sampling1d takes 2-d examples (steps, channels)"),
    ({"conv2d_transpose": {"filters": 1, "kernel_size": 3, "strides": 2,
                           "output_padding": 2}},
     "output_padding 2 must be smaller than the strides 2"),
    ({"conv2d": {"filters": 4, "kernel_size": 3, "groups": 3}},
     "filters (4) must be a multiple of groups (3)"),
    ({"conv2d": {"filters": 4, "kernel_size": 3, "groups": 4}},
     "2 input channels do not split into 4 groups"),
    ({"conv3d": {"filters": 4, "kernel_size": 3}},
     "conv3d takes 4-d examples (depth, height, width, channels)"),
    ({"max_pooling3d": 2}, "max_pooling3d takes 4-d examples (depth, height, width, channels)"),
    ({"conv2d_transpose": {"filters": 1, "kernel_size": 3, "strides": 2,
                           "output_padding": [1, 1, 1]}},
     "output_padding [1, 1, 1] needs one size for each of the 2 spatial axes"),
    ({"conv3d_transpose": {"filters": 1, "kernel_size": [3, 3]}}, "kernel_size"),
    ({"cropping3d": [1, 1]}, "cropping3d.cropping: give one int for every side, or one entry "
                             "per axis (depth, rows, columns), each an int or [before, after]; "
                             "[1, 1] has 2"),
])
def test_bad_resizing_and_convolution_configs_are_refused(tmp_path, layer, message):
    config = {"name": "resize", "data": {"dataset": "synthetic"},
              "model": {"input": [3, 4, 2], "layers": [layer, "flatten", {"dense": 1}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_autoencoder_trains_from_the_cli(tmp_path):
    """A convolutional autoencoder: conv2d down, conv2d_transpose back up, images as targets."""
    rng = np.random.default_rng(0)
    x = (rng.random((256, 8, 8, 1)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=x)
    config = {"name": "autoencoder", "data": {"train": "images.npz",
                                              "validation": {"last": 32}},
              "model": {"input": [8, 8, 1], "layers": [
                  {"conv2d": {"filters": 8, "kernel_size": 3, "strides": 2,
                              "padding": "same", "activation": "relu"}},
                  {"conv2d_transpose": {"filters": 8, "kernel_size": 3, "strides": 2,
                                        "padding": "same", "activation": "relu"}},
                  {"zero_padding2d": 1}, {"cropping2d": 1},
                  {"conv2d": {"filters": 1, "kernel_size": 3, "padding": "same",
                              "activation": "sigmoid"}}]},
              "compile": {"loss": "binary_crossentropy", "optimizer": {"adam": 0.01}},
              "fit": {"epochs": 3, "batch_size": 32}}
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", str(tmp_path / "ae.yaml"), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "autoencoder").iterdir()
    with (run / "history.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
