"""Keras's Attention and AdditiveAttention: Keras's numbers, masks, weights, errors, a fit."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain
from padded import fit_token_seven_task

from nntrain.config.layers import LAYERS
from nntrain.layers import LAYER_TYPES

ARRAYS = {"Q": np.sin(np.arange(2 * 4 * 3).reshape(2, 4, 3) * 0.7).astype(np.float32),
          "V": np.cos(np.arange(2 * 5 * 2).reshape(2, 5, 2) * 0.3).astype(np.float32),
          "K": np.sin(np.arange(2 * 5 * 3).reshape(2, 5, 3) * 0.45).astype(np.float32)}
# the query's and the value's masks (Keras's `mask=[query_mask, value_mask]`)
MASKS = [np.array([[True, True, False, True], [True, False, True, True]]),
         np.array([[True, False, True, True, False], [False, True, True, True, True]]), None]

# Keras 3.15 (JAX backend): the layer built on the inputs' shapes, `set_weights` with the
# weights given, called on the inputs named by letter (query, value[, key])
KERAS = [
    ("dot", "attention", {}, {}, "QK", None,
     [[[0.404727, 0.544782, 0.576368], [0.395739, 0.346011, 0.22739], [-0.669892, -0.742065,
     -0.666489], [0.414774, 0.553121, 0.581339]], [[0.392163, 0.346212, 0.231329],
     [-0.716053, -0.754137, -0.642068], [0.394821, 0.56633, 0.62508], [0.380307,
     0.331866, 0.217349]]]),
    ("dot-scaled-key", "attention", {"use_scale": True}, {"scale": 0.7}, "QVK", None,
     [[[0.579975, 0.417555], [0.446759, 0.241805], [-0.189451, -0.425589], [0.585589,
     0.423068]], [[-0.541248, -0.370487], [-0.048188, 0.21521], [-0.555923, -0.434937],
     [-0.535353, -0.363154]]]),
    ("concat", "attention", {"score_mode": "concat"}, {"concat_score_weight": 1.3}, "QVK",
     None,
     [[[0.739426, 0.555838], [0.81169, 0.653746], [0.773972, 0.589204], [0.738261, 0.55482]],
     [[-0.788968, -0.706204], [-0.812116, -0.71355], [-0.785832, -0.671279], [-0.792056,
     -0.70972]]]),
    ("concat-scaled", "attention", {"score_mode": "concat", "use_scale": True},
     {"scale": 0.8, "concat_score_weight": 1.3}, "QVK", None,
     [[[0.731024, 0.550373], [0.782405, 0.619028], [0.754171, 0.572649], [0.730106,
     0.549558]], [[-0.769064, -0.678027], [-0.785217, -0.682476], [-0.762222, -0.647189],
     [-0.771177, -0.680386]]]),
    ("causal-self", "attention", {"use_causal_mask": True}, {}, "QQ", None,
     [[[0.0, 0.644218, 0.98545], [0.649288, 0.411622, -0.019637], [-0.763215, -0.869829,
     -0.567348], [0.064394, 0.571692, 0.810113]], [[0.854599, 0.319098, -0.366479],
     [-0.793639, -0.914756, -0.60565], [0.12314, 0.527083, 0.683129], [0.623231,
     0.270045, -0.210148]]]),
    ("additive", "additive_attention", {}, {"scale": [0.5, -0.3, 0.9]}, "QVK", None,
     [[[0.413342, 0.226943], [0.484501, 0.314348], [0.472974, 0.296779], [0.413996,
     0.227654]], [[-0.462894, -0.319365], [-0.476916, -0.330604], [-0.472638, -0.314339],
     [-0.463326, -0.319698]]]),
    ("additive-unscaled", "additive_attention", {"use_scale": False}, {}, "QVK", None,
     [[[0.684516, 0.502299], [0.758558, 0.599028], [0.713561, 0.531964], [0.683285,
     0.501155]], [[-0.718897, -0.621813], [-0.739551, -0.629359], [-0.719481, -0.598361],
     [-0.721908, -0.625201]]]),
    ("masked", "attention", {"use_scale": True}, {"scale": 0.7}, "QVK", MASKS,
     [[[0.723325, 0.596811], [0.433809, 0.220818], [0.0, 0.0], [0.725914, 0.599843]],
     [[-0.412771, -0.193839], [0.0, 0.0], [-0.254947, -0.051814], [-0.407799,
     -0.187994]]]),
    ("masked-causal-additive", "additive_attention", {"use_causal_mask": True},
     {"scale": [0.5, -0.3, 0.9]}, "QVK", MASKS,
     [[[1.0, 0.955337], [1.0, 0.955337], [0.0, 0.0], [0.527727, 0.345695]], [[-0.330964,
     -0.142303], [0.0, 0.0], [-0.770633, -0.5661], [-0.577426, -0.351492]]]),]


def _layer(type_name: str, **args):
    return LAYER_TYPES[type_name](LAYERS.args[type_name](**args))


@pytest.mark.parametrize(("type_name", "args", "weights", "inputs", "masks", "expected"),
                         [c[1:] for c in KERAS], ids=[c[0] for c in KERAS])
def test_outputs_match_keras(type_name, args, weights, inputs, masks, expected):
    layer = _layer(type_name, **args)
    x = [jnp.asarray(ARRAYS[name]) for name in inputs]
    params, state, shape = layer.init(jax.random.key(0), [v.shape[1:] for v in x])
    assert {name: np.shape(w) for name, w in params.items()} == \
        {name: np.shape(w) for name, w in weights.items()}  # Keras's weights, by name
    time_mask = None if masks is None else [None if m is None else jnp.asarray(m)
                                            for m in masks]
    y, _ = layer.apply({name: jnp.asarray(w, jnp.float32) for name, w in weights.items()},
                       state, x, time_mask=time_mask)
    assert y.shape[1:] == shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=2e-6)


def test_scales_start_as_keras_starts_them():
    """Attention's scalars start at 1; AdditiveAttention's scale vector is glorot_uniform
    with Keras's fans for a vector (fan_in = fan_out = its length)."""
    params, _, _ = _layer("attention", use_scale=True, score_mode="concat").init(
        jax.random.key(0), [(4, 3), (5, 3)])
    assert {k: float(v) for k, v in params.items()} == {"scale": 1.0,
                                                        "concat_score_weight": 1.0}
    params, _, _ = _layer("additive_attention").init(jax.random.key(0), [(4, 64), (5, 64)])
    scale = np.asarray(params["scale"])
    assert scale.shape == (64,) and 0.1 < np.abs(scale).max() <= np.sqrt(6 / 128)


def test_masked_query_steps_output_zero_and_masked_keys_get_no_weight():
    layer = _layer("attention")
    x = [jnp.asarray(ARRAYS["Q"]), jnp.asarray(ARRAYS["K"])]
    masks = [jnp.asarray(MASKS[0]), jnp.asarray(MASKS[1])]
    y, _ = layer.apply({}, {}, x, time_mask=masks)
    np.testing.assert_array_equal(np.asarray(y)[0, 2], 0.0)
    changed = ARRAYS["K"].copy()
    changed[0, 1] += 50.0  # a masked key (and value) step changes nothing
    z, _ = layer.apply({}, {}, [x[0], jnp.asarray(changed)], time_mask=masks)
    np.testing.assert_allclose(np.asarray(z)[0], np.asarray(y)[0], atol=1e-6)


def test_dropout_drops_attention_weights_only_while_training():
    plain, dropped = _layer("attention"), _layer("attention", dropout=0.5)
    x = [jnp.asarray(ARRAYS["Q"]), jnp.asarray(ARRAYS["K"])]
    reference, _ = plain.apply({}, {}, x)
    inference, _ = dropped.apply({}, {}, x, training=False, rng=jax.random.key(1))
    np.testing.assert_allclose(np.asarray(inference), np.asarray(reference), atol=1e-6)
    first, _ = dropped.apply({}, {}, x, training=True, rng=jax.random.key(1))
    other, _ = dropped.apply({}, {}, x, training=True, rng=jax.random.key(2))
    assert not np.allclose(np.asarray(first), np.asarray(reference))
    assert not np.allclose(np.asarray(first), np.asarray(other))


def _config(tmp_path: Path, layers: list) -> Path:
    inputs = {"ids": {"shape": [6], "dtype": "int32"}}
    if "wide" in str(layers):  # a sequence of 5 features, where a layer takes it
        inputs["wide"] = {"shape": [6, 5]}
    config = {"name": "attend", "data": {"dataset": "synthetic"},
              "model": {"inputs": inputs,
                        "layers": [{"embedding": {"inputs": "ids", "input_dim": 10,
                                                  "output_dim": 4, "mask_zero": True}},
                                   *layers, "global_average_pooling1d", {"dense": 1}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    path = tmp_path / "attend.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_summary_names_and_counts_as_keras(tmp_path):
    result = nntrain("summary", str(_config(tmp_path, [
        {"AdditiveAttention": {"inputs": ["embedding", "embedding"]}},
        {"attention": {"inputs": ["embedding", "additive_attention"], "use_scale": True,
                       "score_mode": "concat"}}])))
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    additive = rows.index(next(r for r in rows if "additive_attention " in r))
    assert "(None, 6, 4)" in rows[additive] and rows[additive].split("│")[3].strip() == "4"
    assert "(AdditiveAttention)" in rows[additive + 1]
    assert "attention (Attention)" in result.output
    line = next(r for r in rows if "attention (Attention)" in r)
    assert line.split("│")[3].strip() == "2"  # scale and concat_score_weight


@pytest.mark.parametrize(("layer", "message"), [
    ({"attention": {}}, "takes 2 or 3 inputs ([query, value] or [query, value, key]), got 1; "
                        "for self-attention give one node twice: inputs: [x, x]"),
    ({"attention": {"inputs": ["embedding", "wide"]}},
     "the query has 4 features, the value (the key when no key is given) 5: scores compare "
     "them feature by feature, so they must match"),
    ({"additive_attention": {"inputs": ["embedding", "wide", "wide"]}},
     "the query has 4 features, the key 5"),
    ({"attention": {"score_mode": "general", "inputs": ["embedding", "embedding"]}},
     "score_mode"),
])
def test_what_it_cannot_take_is_refused_at_validate(tmp_path, layer, message):
    result = nntrain("validate", str(_config(tmp_path, [layer])))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("layer", [
    {"attention": {"inputs": ["embedding", "embedding"], "use_scale": True}},
    {"additive_attention": {"inputs": ["embedding", "embedding"], "dropout": 0.1}},
])
def test_fit_an_attention_classifier_from_the_cli(tmp_path, layer):
    """Padded sequences: is token 7 anywhere? Masked self-attention, then masked average
    pooling."""
    assert fit_token_seven_task(tmp_path, [layer, "global_average_pooling1d"],
                                learning_rate=0.01, epochs=15) > 0.9
