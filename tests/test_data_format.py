"""Keras's `data_format: channels_first`: examples as (channels, ...) in and out, the same
weights and numbers as channels-last on the transposed data, and Keras's flatten order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clirunner import nntrain
from layerrun import run_layer

from nntrain.build import prepare
from nntrain.config.loader import load_config

STEPS = np.sin(np.arange(2 * 3 * 7).reshape(2, 3, 7) * 0.3).astype(np.float32)  # (N, C, steps)
IMAGES = np.sin(np.arange(2 * 3 * 6 * 5).reshape(2, 3, 6, 5) * 0.3).astype(np.float32)
VOLUMES = np.sin(np.arange(2 * 2 * 4 * 4 * 4).reshape(2, 2, 4, 4, 4) * 0.3).astype(np.float32)


@pytest.mark.parametrize(("layer", "x", "args"), [
    ("conv1d", STEPS, {"filters": 4, "kernel_size": 3, "padding": "same"}),
    ("conv2d", IMAGES, {"filters": 4, "kernel_size": 3, "strides": 2}),
    ("conv3d", VOLUMES, {"filters": 2, "kernel_size": 2}),
    ("conv2d_transpose", IMAGES, {"filters": 2, "kernel_size": 3, "strides": 2}),
    ("depthwise_conv2d", IMAGES, {"kernel_size": 3, "depth_multiplier": 2}),
    ("separable_conv2d", IMAGES, {"filters": 4, "kernel_size": 3}),
    ("max_pooling1d", STEPS, {"pool_size": 2}),
    ("average_pooling2d", IMAGES, {"pool_size": 2, "padding": "same"}),
    ("max_pooling3d", VOLUMES, {"pool_size": 2}),
    ("global_average_pooling1d", STEPS, {}),
    ("global_max_pooling2d", IMAGES, {"keepdims": True}),
    ("up_sampling2d", IMAGES, {"size": 2, "interpolation": "bilinear"}),
    ("up_sampling3d", VOLUMES, {"size": 2}),
    ("zero_padding1d", STEPS, {"padding": 2}),
    ("zero_padding2d", IMAGES, {"padding": [1, 2]}),
    ("cropping2d", IMAGES, {"cropping": 1}),
    ("cropping3d", VOLUMES, {"cropping": 1}),
    ("spatial_dropout2d", IMAGES, {"rate": 0.5}),
])
def test_channels_first_is_channels_last_on_the_transposed_examples(layer, x, args):
    first, weights_first = run_layer(layer, x, data_format="channels_first", **args)
    last, weights_last = run_layer(layer, np.moveaxis(x, 1, -1), **args)
    # the same weights from the same key: a checkpoint holds the same arrays either way
    assert jax.tree.map(np.shape, weights_first) == jax.tree.map(np.shape, weights_last)
    expected = np.moveaxis(last, -1, 1) if last.ndim == x.ndim else last
    np.testing.assert_allclose(first, expected, rtol=1e-6, atol=1e-6)


def _config(tmp_path: Path, model: str) -> Path:
    """A config of synthetic data around the model section given (YAML, indented 2)."""
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ndata: {dataset: synthetic}\nmodel:\n" + textwrap.indent(
        textwrap.dedent(model), "  ") + "compile: {loss: mse}\n")
    return path


def test_a_channels_first_model_matches_keras(tmp_path: Path):
    """Keras 3.15 (JAX): Conv2D(3, 2, kernel ones) -> AveragePooling2D(2, strides 1) ->
    Flatten, all channels_first, on (2, 2, 4, 4) examples: the flatten takes Keras's
    channels-last order (each position's 3 channels together)."""
    path = _config(tmp_path, """\
        input: [2, 4, 4]
        layers:
          - conv2d: {filters: 3, kernel_size: 2, data_format: channels_first,
                     kernel_initializer: ones}
          - average_pooling2d: {pool_size: 2, strides: 1, data_format: channels_first}
          - flatten: {data_format: channels_first}
        """)
    setup = prepare(load_config(path))
    params, state = setup.model.init(jax.random.key(0))
    x = np.sin(np.arange(2 * 2 * 4 * 4).reshape(2, 2, 4, 4) * 0.37).astype(np.float32)
    outputs, _, _ = setup.model.apply(params, state, {"input": jnp.asarray(x)})
    (y,) = outputs.values()
    keras = [[4.126028, 3.700705, -0.028252, -1.525477], [3.352917, 4.007742, 2.732268, 1.419843]]
    np.testing.assert_allclose(np.asarray(y), np.repeat(keras, 3, axis=1), rtol=1e-5)


def test_channels_first_shapes_in_validate_and_errors(tmp_path: Path):
    config = _config(tmp_path, """\
        input: [3, 32, 32]
        layers:
          - conv2d: {filters: 8, kernel_size: 3, data_format: channels_first}
          - max_pooling2d: {pool_size: 2, data_format: channels_first}
          - global_average_pooling2d: {data_format: channels_first}
        """)
    result = nntrain("summary", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "(None, 8, 30, 30)" in out and "(None, 8, 15, 15)" in out and "(None, 8)" in out
    bad = nntrain("validate", str(config), "--set", "model.input=[32]", cwd=tmp_path)
    assert bad.exit_code == 2
    assert "channels_first takes examples of (channels, ...); got (32,)" in bad.output
    wrong = nntrain("validate", str(config), "--set",
                    "model.layers[0].conv2d.data_format=channels_middle", cwd=tmp_path)
    assert wrong.exit_code == 2
    assert "'channels_last' or 'channels_first'" in " ".join(wrong.output.split())


def test_a_channels_first_layer_refuses_a_mask_over_steps(tmp_path: Path):
    config = _config(tmp_path, """\
        inputs: {x: {shape: [6], dtype: int32}}
        layers:
          - embedding: {input_dim: 9, output_dim: 8, mask_zero: true}
          - global_average_pooling1d: {data_format: channels_first}
        """)
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "reads its input channels-first, (channels, steps), and cannot take the mask" in \
        " ".join(result.output.split())
