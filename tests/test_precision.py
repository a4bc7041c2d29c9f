"""Mixed precision (`fit.precision: bfloat16`): layers compute in bfloat16, params, optimizer
state, BatchNorm statistics and the loss stay float32, and training follows the float32 run."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clirunner import nntrain
from safetensors.numpy import load_file

from nntrain.build import prepare
from nntrain.config.loader import load_config

CONFIGS = Path(__file__).resolve().parent / "configs"


def _history(run: Path) -> dict[str, np.ndarray]:
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("loss", "val_loss")}


@pytest.mark.parametrize("config", ["tiny_mlp.yaml", "tiny_cnn.yaml"])
def test_bfloat16_training_follows_float32(tmp_path: Path, config: str):
    runs = {}
    for precision in ("float32", "bfloat16"):
        result = nntrain("fit", str(CONFIGS / config), "-q", "--set",
                         f"fit.precision={precision}", "--runs-dir", str(tmp_path / precision))
        assert result.exit_code == 0, result.output
        runs[precision] = next((tmp_path / precision).glob("*/*"))
    f32, bf16 = _history(runs["float32"]), _history(runs["bfloat16"])
    assert not np.array_equal(f32["loss"], bf16["loss"])  # it did compute differently
    np.testing.assert_allclose(bf16["loss"], f32["loss"], rtol=0.02)
    np.testing.assert_allclose(bf16["val_loss"], f32["val_loss"], rtol=0.02)
    weights = load_file(str(runs["bfloat16"] / "checkpoints" / "last" / "arrays.safetensors"))
    assert weights and {a.dtype for a in weights.values()} <= {np.dtype("float32"),
                                                                np.dtype("int32")}


def test_layers_compute_in_bfloat16_and_gradients_reach_float32_params():
    setup = prepare(load_config(CONFIGS / "tiny_cnn.yaml", ["fit.precision=bfloat16"]))
    model = setup.model
    params, state = model.init(jax.random.key(0))
    x = {"input": jnp.ones((4, 8, 8, 1))}

    def loss(p):
        outputs, _, new_state = model.apply(p, state, x, training=True, rng=jax.random.key(1),
                                            mask=jnp.ones(4))
        return outputs[model.output_names[0]].sum(), (outputs, new_state)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss, has_aux=True))(params))
    assert "conv_general_dilated" in jaxpr and "bf16[4,8,8,4]" in jaxpr  # conv in bfloat16
    assert "dot_general" in jaxpr and "bf16[4,2]" in jaxpr  # dense in bfloat16
    grads, (outputs, new_state) = jax.grad(loss, has_aux=True)(params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
    assert {o.dtype for o in outputs.values()} == {jnp.dtype("float32")}
    assert jax.tree.map(lambda v: v.dtype, new_state) == jax.tree.map(lambda v: v.dtype, state)


def test_unknown_precision_is_a_config_error(tmp_path: Path):
    result = nntrain("fit", str(CONFIGS / "tiny_mlp.yaml"), "--set", "fit.precision=float16",
                     cwd=tmp_path)
    assert result.exit_code == 2
    assert "fit.precision" in result.output and "bfloat16" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["batch_normalization", "layer_normalization"])
def test_normalization_statistics_are_float32_under_bfloat16(name: str):
    """Features of mean 100 and std 1: in bfloat16 (8 mantissa bits) their variance comes out
    percent-level wrong. Keras computes these statistics in float32, and so does nntrain; the
    output keeps the compute dtype."""
    from nntrain.config.layers import LAYERS
    from nntrain.layers import LAYER_TYPES

    layer = LAYER_TYPES[name](LAYERS.args[name](momentum=0.0) if name.startswith("batch")
                              else LAYERS.args[name]())
    params, state, _ = layer.init(jax.random.key(0), (4,))
    x = (100 + np.random.default_rng(0).standard_normal((256, 4))).astype(np.float32)
    xb = jnp.asarray(x, jnp.bfloat16)
    y, new_state = layer.apply(params, state, xb, training=True, rng=None,
                               mask=jnp.ones(256))
    assert y.dtype == jnp.bfloat16
    exact = np.asarray(xb, np.float64)  # the bfloat16 inputs, their statistics exactly
    axis = 0 if name.startswith("batch") else 1
    expected = (exact - exact.mean(axis, keepdims=True)) / np.sqrt(
        exact.var(axis, keepdims=True) + 1e-3)
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=0.02)
    if name.startswith("batch"):
        np.testing.assert_allclose(new_state["moving_variance"], exact.var(0), rtol=1e-3)


def _products(jaxpr) -> list[tuple[str, object]]:
    """(primitive, precision) of every matrix product and convolution in `jaxpr`, nested
    programs (jit, custom gradients, loops) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append((eqn.primitive.name, eqn.params["precision"]))
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else [value]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found += _products(sub)
    return found


@pytest.mark.parametrize("setting", ["highest", "default"])
def test_matmul_precision_reaches_every_product_forward_and_backward(setting: str):
    """`fit.matmul_precision` holds for the dense and convolution products and their
    gradients, over JAX's own setting (the tests run under highest: conftest.py)."""
    setup = prepare(load_config(CONFIGS / "tiny_cnn.yaml", [f"fit.matmul_precision={setting}"]))
    model = setup.model
    params, state = model.init(jax.random.key(0))

    def loss(p):
        outputs, _, _ = model.apply(p, state, {"input": jnp.ones((4, 8, 8, 1))}, training=True,
                                    rng=jax.random.key(1), mask=jnp.ones(4))
        return outputs[model.output_names[0]].sum()

    products = _products(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    # the convolution and the dense layer, each forward and for its kernel's gradient
    assert {name for name, _ in products} == {"dot_general", "conv_general_dilated"}
    assert len(products) >= 4
    wanted = getattr(jax.lax.Precision, setting.upper())
    assert {precision for _, precision in products} == {(wanted, wanted)}


def test_a_run_keeps_its_matmul_precision_for_evaluate(tmp_path: Path):
    config = CONFIGS / "tiny_mlp.yaml"
    result = nntrain("fit", str(config), "-q", "--set", "fit.matmul_precision=high",
                     "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("*/*"))
    assert "matmul_precision: high" in (run / "config.yaml").read_text()
    assert prepare(load_config(run / "config.yaml", [])).model.matmul_precision == "high"
    assert nntrain("evaluate", str(run)).exit_code == 0
    refused = nntrain("validate", str(config), "--set", "fit.matmul_precision=float64")
    assert refused.exit_code == 2
    assert "fit.matmul_precision" in refused.output and "'highest'" in refused.output
