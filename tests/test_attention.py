"""MultiHeadAttention: Keras's numbers, masks, parameter counts, errors, and a fit."""

from __future__ import annotations

import json
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


def _weight(shape: tuple[int, ...], k: int) -> np.ndarray:
    return (np.cos(np.arange(np.prod(shape)).reshape(shape) * 0.37 + k) * 0.5).astype(np.float32)


Q = np.sin(np.arange(2 * 4 * 3).reshape(2, 4, 3) * 0.7).astype(np.float32)
V = np.cos(np.arange(2 * 5 * 2).reshape(2, 5, 2) * 0.3).astype(np.float32)
K = np.sin(np.arange(2 * 5 * 3).reshape(2, 5, 3) * 0.45).astype(np.float32)
MASK = (np.arange(2 * 4 * 5).reshape(2, 4, 5) % 3 != 1).astype(np.int32)  # (query, key)

# Keras 3.15 (JAX backend) for the same weights, set with `layer.set_weights` in Keras's
# order: query, key, value, attention_output; kernel before bias
KERAS = [
    ("self", {"num_heads": 2, "key_dim": 2}, [Q],
     [[[0.263316, -0.020985, -0.302446], [0.242416, -0.022224, -0.283856],
       [0.303141, 0.02303, -0.260198], [0.263105, -0.021119, -0.302485]],
      [[0.10453, -0.130314, -0.347521], [0.142273, -0.1054, -0.338808],
       [0.061514, -0.195975, -0.42694], [0.105124, -0.12958, -0.346746]]]),
    ("cross", {"num_heads": 2, "key_dim": 3, "value_dim": 2, "output_shape": 4}, [Q, V],
     [[[0.115519, -0.007121, -0.128797, -0.233041], [0.110595, -0.005425, -0.12071, -0.219658],
       [0.113585, -0.006251, -0.125242, -0.227281], [0.11549, -0.007113, -0.128754, -0.232969]],
      [[0.273368, 0.127195, -0.036194, -0.194684], [0.274786, 0.125424, -0.040914, -0.201714],
       [0.276358, 0.12454, -0.044134, -0.206835], [0.273355, 0.127203, -0.036165, -0.194638]]]),
    ("key-no-bias", {"num_heads": 1, "key_dim": 2, "use_bias": False}, [Q, V, K],
     [[[0.060029, 0.042647, 0.019494], [0.012193, 0.007161, 0.001159],
       [0.136877, 0.099692, 0.049014], [0.058835, 0.041761, 0.019035]],
      [[-0.098521, -0.071015, -0.033898], [-0.146887, -0.107211, -0.053024],
       [-0.119648, -0.086785, -0.042176], [-0.098703, -0.071153, -0.033972]]]),
    ("causal", {"num_heads": 2, "key_dim": 2, "use_causal_mask": True}, [Q],
     [[[0.529714, 0.149431, -0.251077], [0.249518, -0.078696, -0.396259],
       [0.234143, -0.011237, -0.255096], [0.263105, -0.021119, -0.302485]],
      [[-0.15648, -0.412812, -0.613272], [0.103135, -0.071779, -0.236977],
       [0.164745, -0.093229, -0.338585], [0.105124, -0.12958, -0.346746]]]),
    # the attention_mask is the layer's last input (Keras's call argument)
    ("attention-mask", {"num_heads": 2, "key_dim": 2, "output_shape": 4,
                        "attention_mask": "mask"}, [Q, V, MASK],
     [[[-0.002408, -0.10734, -0.197744, -0.261384], [0.116586, 0.010147, -0.097666, -0.192261],
       [0.171048, 0.043928, -0.089137, -0.210137], [-0.002652, -0.107458, -0.19772, -0.261222]],
      [[0.255347, 0.12211, -0.027655, -0.173677], [0.263729, 0.113352, -0.052366, -0.210997],
       [0.262778, 0.11625, -0.046012, -0.202046], [0.256816, 0.123324, -0.026859, -0.173408]]]),
    ("sliding-window", {"num_heads": 2, "key_dim": 2, "sliding_window": 2}, [Q],
     [[[0.143286, -0.162031, -0.445418], [0.175352, -0.054424, -0.276834],
       [0.232369, -0.013444, -0.257438], [0.477469, 0.227995, -0.052338]],
      [[0.07389, -0.090399, -0.242453], [0.232415, -0.013636, -0.257841],
       [0.165009, -0.091664, -0.33593], [0.239473, -0.08765, -0.402911]]]),
]


def _layer(**args):
    return LAYER_TYPES["multi_head_attention"](LAYERS.args["multi_head_attention"](**args))


def _keras_weights(params: dict) -> dict:
    return {name: jnp.asarray(_weight(w.shape, i)) for i, (name, w) in enumerate(params.items())}


@pytest.mark.parametrize(("args", "inputs", "expected"), [c[1:] for c in KERAS],
                         ids=[c[0] for c in KERAS])
def test_outputs_match_keras(args, inputs, expected):
    layer = _layer(**args)
    params, state, shape = layer.init(jax.random.key(0), [x.shape[1:] for x in inputs])
    y, _ = layer.apply(_keras_weights(params), state, [jnp.asarray(x) for x in inputs])
    assert y.shape[1:] == shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=2e-6)


def test_weights_have_keras_layouts_and_counts():
    params, _, shape = _layer(num_heads=4, key_dim=8, value_dim=6, output_shape=5).init(
        jax.random.key(0), [(7, 3), (9, 2)])
    assert {k: v.shape for k, v in params.items()} == {
        "query_kernel": (3, 4, 8), "query_bias": (4, 8),
        "key_kernel": (2, 4, 8), "key_bias": (4, 8),
        "value_kernel": (2, 4, 6), "value_bias": (4, 6),
        "attention_output_kernel": (4, 6, 5), "attention_output_bias": (5,)}
    assert shape == (7, 5)  # the query's steps


def test_kernels_start_with_keras_einsum_fans():
    """Keras's EinsumDense: a (features, heads, key_dim) kernel has fan_in = features and
    fan_out = heads * key_dim; glorot_uniform's limit is sqrt(6 / (fan_in + fan_out))."""
    params, _, _ = _layer(num_heads=4, key_dim=16).init(jax.random.key(0), [(10, 64)])
    for name in ("query_kernel", "attention_output_kernel"):
        values = np.asarray(params[name])
        assert 0.2 < np.abs(values).max() <= np.sqrt(6 / 128)
        assert abs(values.std() - np.sqrt(6 / 128) / np.sqrt(3)) < 0.01


def test_an_orthogonal_kernel_is_drawn_as_keras_draws_it():
    """Keras's Orthogonal: columns orthonormal over the kernel's (all but last axes, last)."""
    params, _, _ = _layer(num_heads=4, key_dim=8, kernel_initializer="orthogonal").init(
        jax.random.key(0), [(10, 16)])
    columns = np.asarray(params["query_kernel"]).reshape(64, 8)
    np.testing.assert_allclose(columns.T @ columns, np.eye(8), atol=1e-5)


def test_a_query_step_that_may_see_no_key_attends_to_nothing():
    """Keras's masked softmax: its weights are all zero, so its output is the output bias."""
    layer = _layer(num_heads=2, key_dim=2, use_causal_mask=True)
    params, state, _ = layer.init(jax.random.key(0), [(3, 3), (3, 2)])
    params = _keras_weights(params)
    value_mask = jnp.asarray([[False, True, True]])  # the first query step sees key 0 only
    y, _ = layer.apply(params, state, [jnp.asarray(Q[:1, :3]), jnp.asarray(V[:1, :3])],
                       time_mask=[None, value_mask])
    np.testing.assert_allclose(np.asarray(y)[0, 0], params["attention_output_bias"], atol=1e-6)
    grads = jax.grad(lambda p: layer.apply(p, state, [jnp.asarray(Q[:1, :3]),
                                                      jnp.asarray(V[:1, :3])],
                                           time_mask=[None, value_mask])[0].sum())(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())


def test_causal_mask_hides_later_steps():
    layer = _layer(num_heads=2, key_dim=2, use_causal_mask=True)
    params, state, _ = layer.init(jax.random.key(0), [(4, 3)])
    changed = Q.copy()
    changed[:, 2:] += 5.0
    y, _ = layer.apply(params, state, [jnp.asarray(Q)])
    z, _ = layer.apply(params, state, [jnp.asarray(changed)])
    np.testing.assert_allclose(np.asarray(y)[:, :2], np.asarray(z)[:, :2], atol=1e-6)
    assert not np.allclose(np.asarray(y)[:, 2:], np.asarray(z)[:, 2:])


def test_dropout_drops_attention_weights_only_while_training():
    plain, dropped = _layer(num_heads=2, key_dim=2), _layer(num_heads=2, key_dim=2, dropout=0.5)
    params, state, _ = plain.init(jax.random.key(0), [(4, 3)])
    x = [jnp.asarray(Q)]
    reference, _ = plain.apply(params, state, x)
    inference, _ = dropped.apply(params, state, x, training=False, rng=jax.random.key(1))
    np.testing.assert_allclose(np.asarray(inference), np.asarray(reference), atol=1e-6)
    first, _ = dropped.apply(params, state, x, training=True, rng=jax.random.key(1))
    again, _ = dropped.apply(params, state, x, training=True, rng=jax.random.key(1))
    other, _ = dropped.apply(params, state, x, training=True, rng=jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.allclose(np.asarray(first), np.asarray(reference))
    assert not np.allclose(np.asarray(first), np.asarray(other))


# -- mask_zero: a transformer encoder block, as Keras runs it --------------------------------
IDS = np.array([[3, 5, 2, 0, 0], [0, 0, 7, 1, 4], [9, 0, 3, 0, 2]], np.int32)
BLOCK = [
    {"multi_head_attention": {"name": "attention", "num_heads": 2, "key_dim": 2}},
    {"add": {"name": "residual", "inputs": ["embedding", "attention"]}},
    {"layer_normalization": {"name": "norm"}},
    {"dense": {"units": 6, "activation": "relu"}},
    {"dense": {"name": "feed_forward", "units": 4}},
    {"add": {"inputs": ["norm", "feed_forward"]}},
    "layer_normalization",
    "global_average_pooling1d",
]
# Keras 3.15: Embedding(10, 4, mask_zero=True), MultiHeadAttention(2, 2)(x, x), Add,
# LayerNormalization, Dense(6, relu), Dense(4), Add, LayerNormalization,
# GlobalAveragePooling1D; weights _weight(shape, i) in Keras's order
BLOCK_KERAS = [[-0.186132, -0.503736, -0.516125, -0.092853],
               [-0.186989, -0.408629, -0.478483, -0.219245],
               [-0.181241, -0.499653, -0.518322, -0.100738]]


def _config(tmp_path: Path, layers: list, output_dim: int = 4) -> Path:
    config = {"name": "attend", "data": {"dataset": "synthetic"},
              "model": {"inputs": {"ids": {"shape": [5], "dtype": "int32"}},
                        "layers": [{"embedding": {"inputs": "ids", "input_dim": 10,
                                                  "output_dim": output_dim,
                                                  "mask_zero": True}}, *layers]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    path = tmp_path / "attend.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_mask_zero_through_a_transformer_block_matches_keras(tmp_path):
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    model = prepare(load_config(_config(tmp_path, BLOCK), [])).model
    params, state = model.init(jax.random.key(0))
    i = 0
    for node in model.graph.nodes:
        for name, value in params.get(node.name, {}).items():  # Keras's order, node by node
            params[node.name][name] = jnp.asarray(_weight(value.shape, i))
            i += 1
    assert i == 17  # as many weights as Keras's model has

    def run(ids):
        return np.asarray(model.apply(params, state, {"ids": jnp.asarray(ids)})[0][
            model.output_names[0]])

    np.testing.assert_allclose(run(IDS), BLOCK_KERAS, atol=2e-6)
    # with no positions, padding changes nothing wherever it is: one sequence padded 3 ways
    y = run(np.array([[3, 5, 2, 0, 0], [0, 0, 3, 5, 2], [0, 3, 0, 5, 2]], np.int32))
    np.testing.assert_allclose(y[1:], y[[0, 0]], atol=1e-6)


def test_masks_are_checked_at_validate(tmp_path):
    kept = nntrain("validate", str(_config(tmp_path, BLOCK[:1])))
    assert kept.exit_code == 0, kept.output  # the output keeps the query's mask: the loss
    # leaves the padded steps out
    attention = {"multi_head_attention": {"name": "attention", "num_heads": 1, "key_dim": 2}}
    joined = nntrain("validate", str(_config(tmp_path, [
        attention, {"concatenate": {"inputs": ["embedding", "attention"], "axis": 1}},
        "global_average_pooling1d"])))
    assert joined.exit_code == 2  # joined along the steps: the masks would need joining
    assert "layer 'concatenate' (concatenate) joins masked sequences along axis 1, not " \
        "their features: that is not supported; join them on axis -1" in joined.output
    for axis in (-1, 2):  # the features, however they are counted
        fine = nntrain("validate", str(_config(tmp_path, [
            attention, {"concatenate": {"inputs": ["embedding", "attention"], "axis": axis}},
            "global_average_pooling1d"])))
        assert fine.exit_code == 0, fine.output


TWO = {"name": "two", "data": {"dataset": "synthetic"},
       "model": {"inputs": {"a": {"shape": [5], "dtype": "int32"},
                            "b": {"shape": [5], "dtype": "int32"}},
                 "layers": [{"embedding": {"name": "ea", "inputs": "a", "input_dim": 10,
                                           "output_dim": 3, "mask_zero": True}},
                            {"embedding": {"name": "eb", "inputs": "b", "input_dim": 10,
                                           "output_dim": 3}}]},
       "compile": {"loss": "mse", "optimizer": "adam"}}


def _two(tmp_path: Path, *, both_masked: bool, merge: str) -> Path:
    config = json.loads(json.dumps(TWO))
    config["model"]["layers"][1]["embedding"]["mask_zero"] = both_masked
    config["model"]["layers"] += [{merge: {"inputs": ["ea", "eb"]}}, "global_average_pooling1d"]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_merges_join_masks_as_keras_3_does(tmp_path):
    """Keras 3: the steps any input keeps (a logical or). Keras 3.15's Add and Concatenate of
    two masked embeddings, then GlobalAveragePooling1D, for weights _weight(shape, i)."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    a = np.array([[3, 5, 0, 0, 0], [1, 0, 2, 0, 0]], np.int32)
    b = np.array([[0, 0, 7, 1, 0], [4, 0, 0, 0, 0]], np.int32)
    for merge, expected in [
        ("add", [[0.191839, 0.075186, -0.051644], [0.261375, 0.082138, -0.108216]]),
        ("concatenate", [[0.220093, 0.243916, 0.234726, -0.028254, -0.16873, -0.286369],
                         [-0.039973, -0.190255, -0.314787, 0.301347, 0.272393, 0.206571]]),
    ]:
        model = prepare(load_config(_two(tmp_path, both_masked=True, merge=merge), [])).model
        params = {name: {"embeddings": jnp.asarray(_weight((10, 3), i))}
                  for i, name in enumerate(("ea", "eb"))}
        outputs = model.apply(params, {}, {"a": jnp.asarray(a), "b": jnp.asarray(b)})[0]
        np.testing.assert_allclose(np.asarray(outputs[model.output_names[0]]), expected,
                                   atol=2e-6)


@pytest.mark.parametrize(("both_masked", "merge", "message"), [
    (False, "add", "layer 'add' (add) joins inputs with the mask that mask_zero on embedding "
                   "'ea' puts on padded steps and inputs without it (eb), where Keras would "
                   "drop the mask (or count every step as real): give every input the mask, "
                   "or drop mask_zero"),
    (False, "concatenate", "inputs without it (eb)"),
    (True, "multiply", "layer 'multiply' (multiply) takes inputs with different masks"),
])
def test_merges_keras_would_lose_the_mask_in_are_refused(tmp_path, both_masked, merge,
                                                          message):
    result = nntrain("validate", str(_two(tmp_path, both_masked=both_masked, merge=merge)))
    assert result.exit_code == 2
    assert message in result.output


SEQ, PIXELS = {"seq": {"shape": [3, 4]}}, {"pixels": {"shape": [2, 3, 4]}}


@pytest.mark.parametrize(("inputs", "layers", "message"), [
    (PIXELS, [{"multi_head_attention": {"num_heads": 2, "key_dim": 4}}],
     "the query must be a sequence, (steps, features); got (2, 3, 4)"),
    (SEQ, [{"dense": {"name": "other", "units": 4, "inputs": "seq"}},
           {"reshape": {"name": "longer", "target_shape": [6, 2], "inputs": "seq"}},
           {"multi_head_attention": {"num_heads": 1, "key_dim": 2,
                                     "inputs": ["seq", "other", "longer"]}}],
     "the key has 6 steps, the value 3: they must have the same number"),
    (SEQ, [{"multi_head_attention": {"num_heads": 1, "key_dim": 2,
                                     "inputs": ["seq", "seq", "seq", "seq"]}}],
     "takes 1 to 3 inputs ([query], [query, value] or [query, value, key]), got 4"),
    ({"seq": {"shape": [6, 4]}, "m": {"shape": [6, 5]}},
     [{"multi_head_attention": {"num_heads": 1, "key_dim": 2, "inputs": "seq",
                                "attention_mask": "m"}}],
     "the attention_mask 'm' must be (query steps, key steps) = (6, 6); got (6, 5)"),
    (SEQ, [{"multi_head_attention": {"num_heads": 1, "key_dim": 2, "inputs": "seq",
                                     "attention_mask": "mask"}}],
     "unknown node 'mask' for the attention_mask of 'multi_head_attention'"),
])
def test_shapes_it_cannot_take_are_refused(tmp_path, inputs, layers, message):
    config = {"name": "shapes", "data": {"dataset": "synthetic"},
              "model": {"inputs": inputs, "layers": [*layers, "flatten"]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(path))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_position_embedding_gives_each_step_its_vector():
    layer = LAYER_TYPES["position_embedding"](LAYERS.args["position_embedding"](
        sequence_length=6))
    params, state, shape = layer.init(jax.random.key(0), (4, 3))
    assert params["embeddings"].shape == (6, 3) and shape == (4, 3)
    y, _ = layer.apply(params, state, jnp.zeros((2, 4, 3)))
    np.testing.assert_array_equal(np.asarray(y), np.broadcast_to(params["embeddings"][:4],
                                                                 (2, 4, 3)))


def test_positions_added_to_masked_tokens_keep_the_tokens_mask(tmp_path):
    """position_embedding passes the tokens' mask on, so `add` keeps it (as KerasHub's
    TokenAndPositionEmbedding does; under Keras's rules a merge with an unmasked input has
    no mask)."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    layers = [{"position_embedding": {"name": "positions", "sequence_length": 5}},
              {"add": {"name": "tokens", "inputs": ["embedding", "positions"]}},
              {"multi_head_attention": {"num_heads": 1, "key_dim": 2}},
              "global_average_pooling1d"]
    model = prepare(load_config(_config(tmp_path, layers), [])).model
    assert model.mask_origins == {name: ("embedding",) for name in (
        "embedding", "positions", "tokens", "multi_head_attention")}
    params, state = model.init(jax.random.key(0))
    y = np.asarray(model.apply(params, state, {"ids": jnp.asarray(IDS)})[0][
        model.output_names[0]])
    # the padded steps' positions change nothing: only the real steps are averaged
    cut = dict(params, positions={"embeddings": params["positions"]["embeddings"].at[3:].set(9)})
    z = np.asarray(model.apply(cut, state, {"ids": jnp.asarray(IDS[:1])})[0][
        model.output_names[0]])
    np.testing.assert_allclose(z, y[:1], atol=1e-6)


def test_position_embedding_refuses_a_longer_input(tmp_path):
    result = nntrain("validate", str(_config(tmp_path, [
        {"position_embedding": 4}, "global_average_pooling1d"])))
    assert result.exit_code == 2
    assert "the input has 5 steps, more than sequence_length 4: raise sequence_length to 5" \
        in result.output


def test_activity_regularizer_is_refused_with_the_reason(tmp_path):
    result = nntrain("validate", str(_config(tmp_path, [
        {"multi_head_attention": {"num_heads": 1, "key_dim": 2,
                                  "activity_regularizer": {"l2": 0.01}}},
        "global_average_pooling1d"])))
    assert result.exit_code == 2
    assert "Keras gives it to the query, key, value and output projections" in result.output


def test_summary_counts_keras_parameters(tmp_path):
    result = nntrain("summary", str(_config(tmp_path, BLOCK)))
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if "attention" in row)
    assert "80" in line  # 4 x (4 * 2 * 2 + 4), as Keras counts them


def test_fit_an_attention_classifier_from_the_cli(tmp_path):
    """Padded sequences: is token 7 anywhere? Self-attention, then masked average pooling."""
    layers = [{"multi_head_attention": {"num_heads": 2, "key_dim": 8, "dropout": 0.1}},
              "global_average_pooling1d"]
    assert fit_token_seven_task(tmp_path, layers, learning_rate=0.01, epochs=15) > 0.9


def test_an_attention_mask_input_trains_as_the_causal_mask_it_spells(tmp_path: Path):
    """A lower-triangular attention_mask given as data is the causal mask: the same history
    as use_causal_mask, from files through fit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=x.sum(axis=(1, 2))[:, None],
             mask=np.broadcast_to(np.tril(np.ones((4, 4), np.int32)), (64, 4, 4)))
    histories = []
    for name, extra in (("given", {"attention_mask": "mask"}), ("causal",
                                                                 {"use_causal_mask": True})):
        inputs = {"x": {"shape": [4, 3]}}
        if "attention_mask" in extra:
            inputs["mask"] = {"shape": [4, 4], "dtype": "int32"}
        config = {"name": name, "seed": 3, "data": {"train": "d.npz"},
                  "model": {"inputs": inputs, "layers": [
                      {"multi_head_attention": {"num_heads": 2, "key_dim": 2, "inputs": "x",
                                                **extra}},
                      "flatten", {"dense": 1}]},
                  "compile": {"loss": "mse", "optimizer": "adam"},
                  "fit": {"epochs": 2, "batch_size": 16}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        result = nntrain("fit", f"{name}.yaml", "-q", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        run = next((tmp_path / "runs" / name).iterdir())
        histories.append([row.split(",")[1] for row in
                          (run / "history.csv").read_text().splitlines()[1:]])
    assert histories[0] == histories[1]


def test_a_layer_with_an_attention_mask_cannot_be_shared(tmp_path: Path):
    """A shared call gives the layer no mask input: refused rather than take an input for
    one."""
    config = {"name": "sh", "data": {"dataset": "synthetic"},
              "model": {"inputs": {"q": {"shape": [5, 5]}, "m": {"shape": [5, 5]}},
                        "layers": [
                            {"multi_head_attention": {"name": "a", "num_heads": 1, "key_dim": 2,
                                                      "attention_mask": "m", "inputs": "q"}},
                            {"shared": {"name": "b", "layer": "a", "inputs": ["q", "q"]}},
                            {"add": {"inputs": ["a", "b"]}}]},
              "compile": {"loss": "mse"}}
    path = tmp_path / "sh.yaml"
    path.write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(path))
    assert result.exit_code == 2
    assert "'a' takes an attention_mask, which a shared call cannot give it" in \
        " ".join(result.output.split())
