"""Convolution, pooling, normalization, merge and embedding layers: output shapes, values
against NumPy references (explicit loops on tiny inputs), Keras's parameter counts, and graph
models built from configs."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nntrain.build import Setup, prepare
from nntrain.config.layers import LAYERS
from nntrain.config.loader import ConfigError, load_config
from nntrain.layers import LAYER_TYPES, ShapeError

RNG = np.random.default_rng(0)
HEAD = "name: t\ndata: {dataset: synthetic}\n"


def make(name: str, **args):
    kind = LAYERS.canonical(name)
    return LAYER_TYPES[kind](LAYERS.args[kind](**args))


def build(name: str, input_shape, **args):
    """A layer, its params and state, and its output shape."""
    layer = make(name, **args)
    params, state, out = layer.init(jax.random.key(0), input_shape)
    return layer, params, state, out


def run(layer, params, state, x, **kwargs):
    y, new_state = layer.apply(params, state, x, **kwargs)
    return np.asarray(y), new_state


def setup_of(tmp_path: Path, model: str) -> Setup:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent(model) + "compile: {loss: mse}\n", encoding="utf-8")
    return prepare(load_config(path))


def counts(tmp_path: Path, input_shape: list[int], layer: str) -> tuple[int, int]:
    setup = setup_of(tmp_path, f"model:\n  input: {input_shape}\n  layers: [{layer}]\n")
    return setup.model.trainable_count, setup.model.non_trainable_count


# -- NumPy references ------------------------------------------------------------------------
def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's `same`: the extra padded element goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def windows(x: np.ndarray, window, strides, padding, dilation=(1, 1)):
    """Yield (i, j, patch) for each output position of one example (h, w, c); padding cells
    are NaN so references can drop them."""
    h, w, _ = x.shape
    dk = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    if padding == "same":
        (t, b), (left, r) = same_padding(h, dk[0], strides[0]), same_padding(w, dk[1], strides[1])
        x = np.pad(x, ((t, b), (left, r), (0, 0)), constant_values=np.nan)
    out_h = (x.shape[0] - dk[0]) // strides[0] + 1
    out_w = (x.shape[1] - dk[1]) // strides[1] + 1
    for i in range(out_h):
        for j in range(out_w):
            rows = [i * strides[0] + a * dilation[0] for a in range(window[0])]
            cols = [j * strides[1] + b * dilation[1] for b in range(window[1])]
            yield i, j, out_h, out_w, x[np.ix_(rows, cols)]


def conv2d_ref(x, kernel, bias, strides, padding, dilation=(1, 1)):
    out = None
    for n in range(x.shape[0]):
        for i, j, out_h, out_w, patch in windows(x[n], kernel.shape[:2], strides, padding,
                                                 dilation):
            if out is None:
                out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
            patch = np.nan_to_num(patch)  # zero padding
            for f in range(kernel.shape[-1]):
                total = bias[f]
                for a, b, c in itertools.product(*map(range, kernel.shape[:3])):
                    total += patch[a, b, c] * kernel[a, b, c, f]
                out[n, i, j, f] = total
    return out


def pool2d_ref(x, pool, strides, padding, kind):
    out = None
    for n in range(x.shape[0]):
        for i, j, out_h, out_w, patch in windows(x[n], pool, strides, padding):
            if out is None:
                out = np.zeros((x.shape[0], out_h, out_w, x.shape[-1]))
            for c in range(x.shape[-1]):
                real = [v for v in patch[:, :, c].ravel() if not np.isnan(v)]
                out[n, i, j, c] = max(real) if kind == "max" else sum(real) / len(real)
    return out


# -- convolution -----------------------------------------------------------------------------
@pytest.mark.parametrize(("padding", "strides", "dilation", "expected"), [
    ("valid", 1, 1, (5, 4)),
    ("same", 1, 1, (7, 6)),
    ("valid", 2, 1, (3, 2)),
    ("same", 2, 1, (4, 3)),
    ("valid", [1, 2], 1, (5, 2)),
    ("valid", 1, 2, (3, 2)),
    ("same", 1, 2, (7, 6)),
])
def test_conv2d_matches_loops(padding, strides, dilation, expected):
    layer, params, _, out = build("conv2d", (7, 6, 2), filters=3, kernel_size=3,
                                  strides=strides, padding=padding, dilation_rate=dilation,
                                  kernel_initializer="zeros")
    assert out == (*expected, 3)
    assert params["kernel"].shape == (3, 3, 2, 3)
    params = {"kernel": jnp.asarray(RNG.normal(size=(3, 3, 2, 3)), jnp.float32),
              "bias": jnp.asarray([0.5, -1.0, 2.0], jnp.float32)}
    x = RNG.normal(size=(2, 7, 6, 2)).astype(np.float32)
    y, _ = run(layer, params, {}, x)
    as2 = (lambda v: (v, v)) if isinstance(strides, int) else tuple
    reference = conv2d_ref(x, np.asarray(params["kernel"]), np.asarray(params["bias"]),
                           as2(strides), padding, (dilation, dilation))
    assert y.shape == (2, *expected, 3)
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4)


def test_conv2d_activation_no_bias_and_rectangular_kernel():
    layer, params, _, out = build("conv2d", (4, 5, 1), filters=2, kernel_size=[2, 3],
                                  use_bias=False, activation="relu")
    assert out == (3, 3, 2) and set(params) == {"kernel"}
    x = RNG.normal(size=(1, 4, 5, 1)).astype(np.float32)
    y, _ = run(layer, params, {}, x)
    reference = conv2d_ref(x, np.asarray(params["kernel"]), np.zeros(2), (1, 1), "valid")
    np.testing.assert_allclose(y, np.maximum(reference, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("padding", "strides", "expected"), [
    ("valid", 1, 8), ("same", 1, 10), ("valid", 2, 4), ("same", 2, 5),
])
def test_conv1d_matches_loops(padding, strides, expected):
    layer, params, _, out = build("conv1d", (10, 2), filters=4, kernel_size=3,
                                  strides=strides, padding=padding, kernel_initializer="zeros")
    assert out == (expected, 4)
    assert params["kernel"].shape == (3, 2, 4)
    params = {"kernel": jnp.asarray(RNG.normal(size=(3, 2, 4)), jnp.float32),
              "bias": jnp.arange(4.0)}
    x = RNG.normal(size=(2, 10, 2)).astype(np.float32)
    y, _ = run(layer, params, {}, x)
    kernel = np.asarray(params["kernel"])[None]  # a 1 x k 2-d kernel
    reference = conv2d_ref(x[:, None], kernel, np.arange(4.0), (1, strides), padding)[:, 0]
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-5)


def _keras_weight(shape: tuple[int, ...], k: int) -> np.ndarray:
    return (np.cos(np.arange(np.prod(shape)).reshape(shape) * 0.37 + k) * 0.5).astype(np.float32)


# Keras 3.15's Conv1D(filters=2, padding="causal", ...) for kernel _keras_weight(shape, 0),
# bias _keras_weight(shape, 1), on the input below
CAUSAL = [
    ({"kernel_size": 3},
     [[[0.875928, 0.83178], [-0.669109, -0.520749], [-0.123449, -1.042981],
       [2.431499, 2.406703], [-1.518545, -1.086907], [-0.085165, -1.00912]],
      [[0.879529, 0.845416], [-0.713385, -0.577399], [-0.04678, -0.974946],
       [2.403107, 2.404543], [-1.566547, -1.152761], [-0.008305, -0.940468]]]),
    ({"kernel_size": 2, "dilation_rate": 2},
     [[[-0.464541, -0.51188], [-0.006767, -0.32732], [1.566989, 1.149953],
       [0.062335, -0.000915], [-0.816856, -0.848888], [1.57551, 1.158172]],
      [[-0.489359, -0.540195], [0.027452, -0.294858], [1.583663, 1.166092],
       [0.016025, -0.039787], [-0.786771, -0.825778], [1.591443, 1.17371]]]),
    ({"kernel_size": 3, "strides": 2},
     [[[0.875928, 0.83178], [-0.123449, -1.042981], [-1.518545, -1.086907]],
      [[0.879529, 0.845416], [-0.04678, -0.974946], [-1.566547, -1.152761]]]),
]


@pytest.mark.parametrize(("args", "expected"), CAUSAL, ids=["k3", "dilated", "strided"])
def test_causal_conv1d_matches_keras(args, expected):
    layer, params, _, out = build("conv1d", (6, 3), filters=2, padding="causal", **args)
    params = {k: jnp.asarray(_keras_weight(v.shape, i)) for i, (k, v) in enumerate(params.items())}
    x = np.sin(np.arange(2 * 6 * 3).reshape(2, 6, 3) * 0.7).astype(np.float32)
    y, _ = run(layer, params, {}, x)
    assert y.shape[1:] == out
    np.testing.assert_allclose(y, expected, atol=2e-6)
    # no step sees a later one
    later = x.copy()
    later[:, 4:] += 3.0
    z, _ = run(layer, params, {}, later)
    kept = 4 // args.get("strides", 1)
    np.testing.assert_allclose(z[:, :kept], y[:, :kept], atol=1e-6)


def test_causal_padding_is_for_conv1d_only():
    with pytest.raises(ValueError):
        make("conv2d", filters=1, kernel_size=3, padding="causal")


@pytest.mark.parametrize(("args", "out"), [
    ({"kernel_size": 3}, (3, 4, 3)),
    ({"kernel_size": [2, 3], "depth_multiplier": 2, "strides": 2, "padding": "same"},
     (3, 3, 6)),
])
def test_depthwise_conv2d_convolves_each_channel_on_its_own(args, out):
    layer, params, _, shape = build("depthwise_conv2d", (5, 6, 3), **args)
    assert shape == out and set(params) == {"kernel", "bias"}  # Keras's weight names
    kernel = RNG.normal(size=params["kernel"].shape).astype(np.float32)
    bias = RNG.normal(size=out[-1]).astype(np.float32)
    x = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    y, _ = run(layer, {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}, {}, x)
    strides = (args.get("strides", 1),) * 2
    multiplier = kernel.shape[-1]
    for c in range(3):  # channel c's filters are outputs c * multiplier ...
        columns = slice(c * multiplier, (c + 1) * multiplier)
        reference = conv2d_ref(x[..., c:c + 1], kernel[:, :, c:c + 1], bias[columns], strides,
                               args.get("padding", "valid"))
        np.testing.assert_allclose(y[..., columns], reference, rtol=1e-4, atol=1e-5)


def test_separable_conv2d_is_depthwise_then_pointwise():
    layer, params, _, shape = build("separable_conv2d", (5, 6, 3), filters=4, kernel_size=3,
                                    depth_multiplier=2, padding="same")
    assert shape == (5, 6, 4)
    assert {k: v.shape for k, v in params.items()} == {
        "depthwise_kernel": (3, 3, 3, 2), "pointwise_kernel": (1, 1, 6, 4), "bias": (4,)}
    weights = {k: jnp.asarray(RNG.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    x = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    y, _ = run(layer, weights, {}, x)
    depthwise, _ = run(make("depthwise_conv2d", kernel_size=3, depth_multiplier=2,
                            padding="same", use_bias=False),
                       {"kernel": weights["depthwise_kernel"]}, {}, x)
    reference = depthwise @ np.asarray(weights["pointwise_kernel"])[0, 0] + weights["bias"]
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4)


def test_conv_shape_errors_and_argument_checks():
    with pytest.raises(ShapeError, match="3-d examples"):
        build("conv2d", (28, 28), filters=1, kernel_size=3)
    with pytest.raises(ShapeError, match="does not fit"):
        build("conv2d", (2, 2, 1), filters=1, kernel_size=3)
    with pytest.raises(ValueError, match="dilation_rate"):
        make("conv2d", filters=1, kernel_size=3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError):
        make("conv1d", filters=1, kernel_size=[3, 3])


def test_conv_parameter_counts_are_keras(tmp_path):
    assert counts(tmp_path, [28, 28, 1], "conv2d: {filters: 32, kernel_size: 3}") == (320, 0)
    assert counts(tmp_path, [9, 9, 32], "conv2d: {filters: 64, kernel_size: [3, 5]}") == \
        (3 * 5 * 32 * 64 + 64, 0)
    assert counts(tmp_path, [10, 2], "conv1d: {filters: 4, kernel_size: 3, use_bias: false}") \
        == (24, 0)


# -- pooling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize(("pool", "strides", "padding", "expected"), [
    (2, None, "valid", (3, 2)),
    (2, None, "same", (4, 3)),
    (3, 2, "valid", (3, 2)),
    (3, 2, "same", (4, 3)),
    (3, 1, "same", (7, 5)),
    ([2, 1], None, "valid", (3, 5)),
])
def test_pooling2d_matches_loops(kind, pool, strides, padding, expected):
    layer, params, state, out = build(f"{kind}_pooling2d", (7, 5, 2), pool_size=pool,
                                      strides=strides, padding=padding)
    assert out == (*expected, 2)
    assert params == {} and state == {}
    x = RNG.normal(size=(2, 7, 5, 2)).astype(np.float32)
    y, _ = run(layer, params, state, x)
    pool2 = (pool, pool) if isinstance(pool, int) else tuple(pool)
    strides2 = pool2 if strides is None else (strides, strides)
    reference = pool2d_ref(x, pool2, strides2, padding, kind)
    assert y.shape == (2, *expected, 2)
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize(("shape", "padding"), [((8, 6, 3), "same"), ((7, 5, 3), "valid"),
                                                ((8, 6, 3), "valid")])
def test_tiling_windows_match_reduce_window_in_values_and_gradients(kind, shape, padding):
    """Windows that tile the input are reduced over reshaped axes (faster to train on CPU):
    values and gradients must equal lax.reduce_window's."""
    layer, _, _, out = build(f"{kind}_pooling2d", shape, pool_size=2, padding=padding)
    x = jnp.asarray(RNG.normal(size=(2, *shape)).astype(np.float32))  # no ties: one max each
    cotangent = jnp.asarray(RNG.normal(size=(2, *out)).astype(np.float32))

    def tiled(v):
        return (layer.apply({}, {}, v)[0] * cotangent).sum()

    def windowed(v):
        op, init = (jax.lax.max, -jnp.inf) if kind == "max" else (jax.lax.add, 0.0)
        y = jax.lax.reduce_window(v, init, op, (1, 2, 2, 1), (1, 2, 2, 1), padding.upper())
        return ((y if kind == "max" else y / 4) * cotangent).sum()

    assert layer._tiles(x) is not None
    np.testing.assert_allclose(tiled(x), windowed(x), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(tiled)(x), jax.grad(windowed)(x), rtol=1e-6)


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize(("padding", "expected"), [("valid", 3), ("same", 4)])
def test_pooling1d_matches_loops(kind, padding, expected):
    layer, _, _, out = build(f"{kind}_pooling1d", (7, 3), padding=padding)
    assert out == (expected, 3)
    x = RNG.normal(size=(2, 7, 3)).astype(np.float32)
    y, _ = run(layer, {}, {}, x)
    reference = pool2d_ref(x[:, None], (1, 2), (1, 2), padding, kind)[:, 0]
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)


def test_average_pooling_same_counts_only_real_elements():
    layer, _, _, out = build("average_pooling2d", (3, 3, 1), padding="same")
    assert out == (2, 2, 1)
    x = np.arange(9.0, dtype=np.float32).reshape(1, 3, 3, 1)
    y, _ = run(layer, {}, {}, x)
    # windows [[0,1],[3,4]], [[2],[5]], [[6,7]], [[8]]
    np.testing.assert_allclose(y[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])


@pytest.mark.parametrize(("name", "shape", "reduce"), [
    ("global_average_pooling1d", (5, 3), np.mean),
    ("global_max_pooling1d", (5, 3), np.max),
    ("global_average_pooling2d", (4, 5, 3), np.mean),
    ("global_max_pooling2d", (4, 5, 3), np.max),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(name, shape, reduce, keepdims):
    layer, _, _, out = build(name, shape, keepdims=keepdims)
    axes = tuple(range(1, len(shape)))
    assert out == ((*(1,) * len(axes), 3) if keepdims else (3,))
    x = RNG.normal(size=(2, *shape)).astype(np.float32)
    y, _ = run(layer, {}, {}, x)
    np.testing.assert_allclose(y, reduce(x, axis=axes, keepdims=keepdims), rtol=1e-5)


def test_pooling_shape_errors():
    with pytest.raises(ShapeError, match="3-d examples"):
        build("max_pooling2d", (8, 8))
    with pytest.raises(ShapeError, match="does not fit"):
        build("max_pooling2d", (1, 4, 1))
    with pytest.raises(ShapeError, match="2-d examples"):
        build("global_average_pooling1d", (4, 4, 1))


# -- normalization ---------------------------------------------------------------------------
def test_normalization_adapt_gives_numpy_statistics():
    layer, params, state, out = build("normalization", (4, 3))
    assert out == (4, 3) and params == {}
    x = RNG.normal(2.0, 3.0, size=(50, 4, 3)).astype(np.float32)
    # before adapt: mean 0, variance 1, so the layer is the identity
    np.testing.assert_allclose(run(layer, params, state, x[:2])[0], x[:2])
    state = layer.adapt(state, x)
    np.testing.assert_allclose(state["mean"], x.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(state["variance"], x.var(axis=(0, 1)), rtol=1e-5)
    assert int(state["count"]) == 200
    y, new_state = run(layer, params, state, x)
    assert new_state is state
    expected = (x - x.mean(axis=(0, 1))) / np.sqrt(x.var(axis=(0, 1)))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert run(layer, params, state, x, training=True)[0].shape == x.shape


def test_normalization_axes_and_zero_variance():
    layer, _, state, _ = build("normalization", (4, 3), axis=[1, 2])
    assert state["mean"].shape == (4, 3)
    x = RNG.normal(size=(20, 4, 3)).astype(np.float32)
    x[:, 0, 0] = 7.0  # constant: variance 0, divided by 1e-7 instead
    state = layer.adapt(state, x)
    np.testing.assert_allclose(state["mean"], x.mean(axis=0), rtol=1e-5)
    y, _ = run(layer, {}, state, x)
    np.testing.assert_allclose(y[:, 0, 0], 0.0)
    _, _, state, _ = build("normalization", (4, 3), axis=None)
    assert state["mean"].shape == ()


def test_normalization_with_given_mean_and_variance_does_not_adapt():
    layer, params, state, _ = build("normalization", (2,), mean=[1.0, 2.0], variance=4.0)
    assert params == {} and state == {} and not hasattr(layer, "adapt")
    y, _ = run(layer, params, state, np.array([[3.0, 2.0]], np.float32))
    np.testing.assert_allclose(y, [[1.0, 0.0]])
    with pytest.raises(ShapeError, match="broadcast"):
        build("normalization", (2,), mean=[1.0, 2.0, 3.0], variance=1.0)
    with pytest.raises(ValueError, match="both"):
        make("normalization", mean=1.0)


def test_normalization_counts_and_model_adapt(tmp_path):
    assert counts(tmp_path, [8], "normalization") == (0, 17)
    setup = setup_of(tmp_path, """\
        model:
          input: [3]
          layers: [{dense: {units: 2}}, normalization]
        """)
    model = setup.model
    params, state = model.init(jax.random.key(0))
    x = RNG.normal(size=(30, 3)).astype(np.float32)
    state = model.adapt(params, state, {"input": x})
    hidden = x @ np.asarray(params["dense"]["kernel"])
    np.testing.assert_allclose(state["normalization"]["mean"], hidden.mean(0), atol=1e-5)
    np.testing.assert_allclose(state["normalization"]["variance"], hidden.var(0), rtol=1e-4)


def batch_norm_ref(x, gamma, beta, mean, var, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_batch_normalization_training_inference_and_moving_averages():
    layer, params, state, out = build("batch_normalization", (3, 4), momentum=0.9)
    assert out == (3, 4)
    assert {k: v.shape for k, v in params.items()} == {"gamma": (4,), "beta": (4,)}
    np.testing.assert_array_equal(state["moving_variance"], np.ones(4))
    params = {"gamma": jnp.asarray([1.0, 2.0, 0.5, 1.0]), "beta": jnp.asarray([0.0, 1.0, -1, 3])}
    x = RNG.normal(1.0, 2.0, size=(5, 3, 4)).astype(np.float32)
    mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))

    y, new_state = run(layer, params, state, x, training=True)
    g, b = np.asarray(params["gamma"]), np.asarray(params["beta"])
    np.testing.assert_allclose(y, batch_norm_ref(x, g, b, mean, var), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["moving_mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["moving_variance"], 0.9 + 0.1 * var, rtol=1e-5)

    # a second step compounds by the same rule
    _, third = run(layer, params, new_state, x, training=True)
    np.testing.assert_allclose(third["moving_mean"], 0.9 * 0.1 * mean + 0.1 * mean, rtol=1e-5)

    # inference uses the moving statistics and leaves them alone
    y, same = run(layer, params, new_state, x, training=False)
    moving = np.asarray(new_state["moving_mean"]), np.asarray(new_state["moving_variance"])
    np.testing.assert_allclose(y, batch_norm_ref(x, g, b, *moving), rtol=1e-4, atol=1e-4)
    assert same is new_state


def test_batch_normalization_skips_padding_rows():
    layer, params, state, _ = build("batch_normalization", (4,))
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    x[4:] = 1e6  # the padded tail of the last batch
    mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
    y, new_state = run(layer, params, state, x, training=True, mask=mask)
    real = x[:4]
    mean, var = real.mean(0), real.var(0)
    np.testing.assert_allclose(y[:4], batch_norm_ref(real, 1, 0, mean, var), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(new_state["moving_mean"], 0.01 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_state["moving_variance"], 0.99 + 0.01 * var, rtol=1e-5)
    assert layer.uses_mask


def test_batch_normalization_other_axis_and_options():
    layer, params, state, _ = build("batch_normalization", (3, 4), axis=1, center=False,
                                    scale=False)
    assert params == {} and state["moving_mean"].shape == (3,)
    x = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    y, _ = run(layer, params, state, x, training=True)
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ShapeError, match="batch axis"):
        build("batch_normalization", (3,), axis=0)


def test_batch_normalization_counts_are_keras(tmp_path):
    assert counts(tmp_path, [5, 5, 64], "batch_normalization") == (128, 128)


def test_layer_normalization():
    layer, params, state, out = build("layer_normalization", (3, 4))
    assert out == (3, 4) and state == {}
    assert {k: v.shape for k, v in params.items()} == {"gamma": (4,), "beta": (4,)}
    params = {"gamma": jnp.asarray([1.0, 2.0, 3.0, 4.0]), "beta": jnp.ones(4)}
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * np.arange(1.0, 5.0) + 1.0
    for training in (False, True):
        y, _ = run(layer, params, state, x, training=training)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    layer, params, _, _ = build("layer_normalization", (3, 4), axis=[1, 2], center=False)
    assert {k: v.shape for k, v in params.items()} == {"gamma": (3, 4)}
    y, _ = run(layer, params, {}, x)
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)


# -- merging ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "reference"), [
    ("add", lambda a, b, c: a + b + c),
    ("multiply", lambda a, b, c: a * b * c),
    ("average", lambda a, b, c: (a + b + c) / 3),
    ("maximum", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ("minimum", lambda a, b, c: np.minimum(np.minimum(a, b), c)),
])
def test_elementwise_merges(name, reference):
    layer, _, _, out = build(name, [(2, 3)] * 3)
    assert layer.multi_input and out == (2, 3)
    xs = [RNG.normal(size=(4, 2, 3)).astype(np.float32) for _ in range(3)]
    y, _ = run(layer, {}, {}, [jnp.asarray(a) for a in xs])
    np.testing.assert_allclose(y, reference(*xs), rtol=1e-6)
    with pytest.raises(ShapeError, match=r"\(2, 3\), \(3, 2\)"):
        build(name, [(2, 3), (3, 2)])
    with pytest.raises(ShapeError, match="at least 2"):
        build(name, [(2, 3)])


def test_subtract_takes_two():
    layer, _, _, _ = build("subtract", [(3,), (3,)])
    y, _ = run(layer, {}, {}, [jnp.asarray([[5.0, 1, 2]]), jnp.asarray([[1.0, 1, 3]])])
    np.testing.assert_allclose(y, [[4.0, 0.0, -1.0]])
    with pytest.raises(ShapeError, match="exactly 2"):
        build("subtract", [(3,)] * 3)


@pytest.mark.parametrize(("axis", "shapes", "expected"), [
    (-1, [(2, 3), (2, 5)], (2, 8)),
    (1, [(2, 3), (4, 3)], (6, 3)),
    (-2, [(2, 3), (4, 3), (1, 3)], (7, 3)),
])
def test_concatenate(axis, shapes, expected):
    layer, _, _, out = build("concatenate", shapes, axis=axis)
    assert out == expected
    xs = [RNG.normal(size=(2, *s)).astype(np.float32) for s in shapes]
    y, _ = run(layer, {}, {}, [jnp.asarray(a) for a in xs])
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis))


def test_concatenate_shape_errors_name_both_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3\), \(4, 5\)"):
        build("concatenate", [(2, 3), (4, 5)])
    with pytest.raises(ShapeError, match="ranks"):
        build("concatenate", [(2, 3), (3,)])
    with pytest.raises(ShapeError, match="batch axis"):
        build("concatenate", [(3,), (3,)], axis=0)


# -- embedding -------------------------------------------------------------------------------
def test_embedding_looks_up_rows():
    layer, params, state, out = build("embedding", (5,), input_dim=10, output_dim=3)
    assert out == (5, 3) and state == {}
    table = np.asarray(params["embeddings"])
    assert table.shape == (10, 3)
    assert np.abs(table).max() <= 0.05 and np.abs(table).max() > 0.01  # Keras's "uniform"
    ids = np.array([[0, 9, 3, 3, 1], [2, 2, 2, 2, 2]])
    for x in (ids.astype(np.int32), ids.astype(np.float32)):
        y, _ = run(layer, params, state, x)
        np.testing.assert_array_equal(y, table[ids])
    _, params, _, out = build("embedding", (2, 4), input_dim=7, output_dim=6,
                              embeddings_initializer="zeros")
    assert out == (2, 4, 6) and not np.asarray(params["embeddings"]).any()


def test_embedding_counts_are_keras(tmp_path):
    assert counts(tmp_path, [12], "embedding: {input_dim: 1000, output_dim: 16}") == (16_000, 0)


# -- graph models from configs ---------------------------------------------------------------
GRAPH = """\
model:
  inputs:
    image: {shape: [8, 8, 1]}
    tokens: {shape: [6], dtype: int32}
  layers:
    - conv2d: {filters: 4, kernel_size: 3, padding: same, activation: relu, inputs: image}
    - batch_normalization
    - max_pooling2d: 2
    - conv2d: {filters: 6, kernel_size: 3, strides: 2}
    - global_average_pooling2d: {name: image_features}
    - embedding: {input_dim: 20, output_dim: 5, inputs: tokens}
    - conv1d: {filters: 6, kernel_size: 3}
    - global_max_pooling1d: {name: token_features}
    - add: {name: summed, inputs: [image_features, token_features]}
    - concatenate: {inputs: [summed, image_features, token_features]}
    - layer_normalization
    - dense: {units: 2, name: out}
"""


def test_graph_model_from_config(tmp_path):
    setup = setup_of(tmp_path, GRAPH)
    model = setup.model
    assert model.output_shapes == {"out": (2,)}
    shapes = {r.name: r.output_shape for r in model.summary_rows()}
    assert shapes == {
        "conv2d": (8, 8, 4), "batch_normalization": (8, 8, 4), "max_pooling2d": (4, 4, 4),
        "conv2d_1": (1, 1, 6), "image_features": (6,), "embedding": (6, 5),
        "conv1d": (4, 6), "token_features": (6,), "summed": (6,), "concatenate": (18,),
        "layer_normalization": (18,), "out": (2,),
    }
    assert model.non_trainable_count == 8  # the moving mean and variance of 4 channels
    params, state = model.init(jax.random.key(0))
    inputs = {"image": RNG.normal(size=(3, 8, 8, 1)).astype(np.float32),
              "tokens": RNG.integers(0, 20, size=(3, 6)).astype(np.int32)}
    mask = jnp.asarray([1.0, 1.0, 0.0])
    outputs, _, new_state = model.apply(params, state, inputs, training=True,
                                        rng=jax.random.key(1), mask=mask)
    assert outputs["out"].shape == (3, 2)
    assert set(new_state) == {"batch_normalization"}
    assert not np.allclose(new_state["batch_normalization"]["moving_mean"], 0.0)
    outputs, _, _ = model.apply(params, new_state, inputs)
    assert np.isfinite(np.asarray(outputs["out"])).all()


def test_mismatched_concatenate_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.dedent("""\
        model:
          inputs: {a: {shape: [4]}, b: {shape: [5, 2]}}
          layers:
            - dense: {units: 3, inputs: b}
            - concatenate: {name: joined, inputs: [a, dense]}
        compile: {loss: mse}
        """), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        prepare(load_config(path))
    (issue,) = info.value.issues
    assert issue.path == "model.layers[1]"
    assert "'joined'" in issue.message
    assert "(4,), (5, 3)" in issue.message


def test_group_normalization_normalizes_each_group_of_channels():
    """Keras's GroupNormalization: 8 channels in 4 groups of 2, statistics over the steps and
    the group's channels of each example."""
    layer, params, state, out = build("group_normalization", (5, 8), groups=4)
    assert out == (5, 8) and state == {}
    assert {k: v.shape for k, v in params.items()} == {"gamma": (8,), "beta": (8,)}
    params = {"gamma": jnp.arange(1.0, 9.0), "beta": jnp.full(8, 0.5)}
    x = RNG.normal(size=(3, 5, 8)).astype(np.float32) * 3 + 1
    grouped = x.reshape(3, 5, 4, 2)
    mean = grouped.mean((1, 3), keepdims=True)
    var = grouped.var((1, 3), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + 1e-3)).reshape(3, 5, 8) * np.arange(1, 9) + 0.5
    y, _ = run(layer, params, state, x, training=True)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # groups: -1 is instance normalization: each channel of each example on its own
    layer, params, _, _ = build("group_normalization", (5, 8), groups=-1, center=False,
                                scale=False)
    assert params == {}
    y, _ = run(layer, params, {}, x)
    np.testing.assert_allclose(y, (x - x.mean(1, keepdims=True)) /
                               np.sqrt(x.var(1, keepdims=True) + 1e-3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("groups", "message"), [
    (3, "8 channels do not split into 3 groups"), (16, "16 groups but only 8 channels")])
def test_group_normalization_needs_groups_that_divide_the_channels(groups, message):
    with pytest.raises(ShapeError, match=message):
        build("group_normalization", (5, 8), groups=groups)


def test_unit_normalization_and_the_softmax_layer():
    x = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    layer, params, _, out = build("unit_normalization", (4, 5))
    assert out == (4, 5) and params == {}
    y, _ = run(layer, params, {}, x)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-5)
    y, _ = run(layer, params, {}, np.zeros_like(x))  # no division by zero
    assert np.all(y == 0)
    layer, params, _, _ = build("softmax", (4, 5), axis=[1, 2])
    y, _ = run(layer, params, {}, x)
    e = np.exp(x - x.max((1, 2), keepdims=True))
    np.testing.assert_allclose(y, e / e.sum((1, 2), keepdims=True), rtol=1e-5)


# -- shared layers -----------------------------------------------------------------------------
SIAMESE = """
model:
  inputs: {left: {shape: [6]}, right: {shape: [6]}}
  layers:
    - dense: {units: 4, activation: tanh, name: encoder, inputs: left}
    - SECOND
    - subtract: {inputs: [encoder, right_code]}
    - dense: {units: 1, name: out}
"""


def test_a_shared_layer_calls_the_same_weights_and_sums_their_gradients(tmp_path):
    """Keras's one layer called on two inputs: one set of weights, whose gradient is the
    sum of what both calls give, as two separate layers holding equal weights would."""
    shared = setup_of(tmp_path, SIAMESE.replace(
        "SECOND", "shared: {layer: encoder, inputs: right, name: right_code}")).model
    twins = setup_of(tmp_path, SIAMESE.replace(
        "SECOND", "dense: {units: 4, activation: tanh, name: right_code, inputs: right}")).model
    params, state = shared.init(jax.random.key(0))
    assert set(params) == {"encoder", "out"}
    assert shared.trainable_count == 6 * 4 + 4 + 5
    twin_params = {**params, "right_code": params["encoder"]}
    x = {"left": jnp.asarray(RNG.normal(size=(5, 6)), jnp.float32),
         "right": jnp.asarray(RNG.normal(size=(5, 6)), jnp.float32)}

    def total(model, p):
        return model.apply(p, state, x)[0]["out"].sum()

    np.testing.assert_allclose(total(shared, params), total(twins, twin_params), rtol=1e-6)
    w, b = (np.asarray(params["encoder"][k]) for k in ("kernel", "bias"))
    codes = np.tanh(np.asarray(x["left"]) @ w + b) - np.tanh(np.asarray(x["right"]) @ w + b)
    expected = codes @ np.asarray(params["out"]["kernel"]) + np.asarray(params["out"]["bias"])
    np.testing.assert_allclose(shared.apply(params, state, x)[0]["out"], expected, rtol=1e-5)
    grads = jax.grad(lambda p: total(shared, p))(params)
    twin_grads = jax.grad(lambda p: total(twins, p))(twin_params)
    for k in ("kernel", "bias"):
        np.testing.assert_allclose(grads["encoder"][k], twin_grads["encoder"][k] +
                                   twin_grads["right_code"][k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("second", "message"), [
    ("shared: {layer: right, inputs: right, name: right_code}",
     "'right' is an input, not a layer"),
    ("shared: {layer: out, inputs: right, name: right_code}",
     "'out' is not a layer listed before 'right_code': it is listed after this one"),
    ("shared: {layer: encodr, inputs: right, name: right_code}",
     "'encodr' is not a layer listed before 'right_code': no such layer"),
    ("shared: {layer: encoder, inputs: right, name: right_code, activity_regularizer: l2}",
     "a shared layer's activity_regularizer is the layer's"),
])
def test_a_shared_layer_names_a_layer_listed_before_it(tmp_path, second, message):
    with pytest.raises(ConfigError) as info:
        setup_of(tmp_path, SIAMESE.replace("SECOND", second))
    assert message in str(info.value)


def test_a_shared_layer_needs_inputs_its_weights_fit_and_no_state(tmp_path):
    wider = SIAMESE.replace("right: {shape: [6]}", "right: {shape: [8]}").replace(
        "SECOND", "shared: {layer: encoder, inputs: right, name: right_code}")
    with pytest.raises(ConfigError) as info:
        setup_of(tmp_path, wider)
    assert "layer 'right_code' (shared: encoder) would need weights of other shapes than " \
        "'encoder' has" in str(info.value)
    normalized = SIAMESE.replace(
        "- dense: {units: 4, activation: tanh, name: encoder, inputs: left}",
        "- batch_normalization: {name: encoder, inputs: left}").replace(
        "SECOND", "shared: {layer: encoder, inputs: right, name: right_code}").replace(
        "subtract: {inputs: [encoder, right_code]}", "add: {inputs: [encoder, right_code]}")
    with pytest.raises(ConfigError) as info:
        setup_of(tmp_path, normalized)
    assert "shares 'encoder', which keeps state (moving_mean, moving_variance)" in \
        str(info.value)


def test_a_shared_embedding_checks_the_ids_of_its_own_input_too(tmp_path):
    setup = setup_of(tmp_path, """
model:
  inputs: {left: {shape: [5], dtype: int32}, right: {shape: [5], dtype: int32}}
  layers:
    - embedding: {input_dim: 10, output_dim: 3, name: enc, inputs: left}
    - shared: {layer: enc, inputs: right, name: renc}
    - concatenate: {inputs: [enc, renc]}
    - flatten
    - dense: 2
""")
    assert setup.io.embedded == {"left": (("enc", 10),), "right": (("renc", 10),)}


def test_a_softmax_layer_over_the_last_axis_is_the_softmax_activation(tmp_path):
    """So a cross-entropy after it takes the values before it, `from_logits` after it is
    refused as after `activation: softmax`, and predict reads class probabilities."""
    setup = setup_of(tmp_path, "model:\n  input: [4]\n  layers: [{dense: 3}, softmax]\n")
    assert setup.model.output_activation("softmax") == "softmax"
    other = setup_of(tmp_path, "model:\n  input: [2, 4]\n  layers: [{dense: 3}, "
                               "{softmax: {axis: 1}}]\n")
    assert other.model.output_activation("softmax") is None
    with pytest.raises(ConfigError, match="from_logits: true, but output 'softmax' ends in "
                                          "softmax"):
        path = tmp_path / "logits.yaml"
        path.write_text(HEAD + "model:\n  input: [4]\n  layers: [{dense: 3}, softmax]\n"
                        "compile: {loss: {sparse_categorical_crossentropy: {from_logits: "
                        "true}}}\n")
        prepare(load_config(path))


@pytest.mark.parametrize("name", ["softmax", "unit_normalization"])
def test_an_empty_axis_list_is_refused(name):
    with pytest.raises(ShapeError, match="axis is an empty list"):
        build(name, (4, 6), axis=[])
