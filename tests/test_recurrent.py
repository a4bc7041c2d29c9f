"""SimpleRNN, LSTM and GRU: Keras's numbers, shapes, parameter counts, dropout, and a fit."""

from __future__ import annotations

import csv
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

ROOT = Path(__file__).resolve().parents[1]
TINY_LSTM = ROOT / "tests" / "configs" / "tiny_lstm.yaml"

# Inputs and weights any framework can rebuild; the expected outputs are Keras 3.15's (JAX
# backend) for the same weights, set with `layer.set_weights` in the order kernel,
# recurrent_kernel, bias.
X = np.sin(np.arange(2 * 4 * 3).reshape(2, 4, 3) * 0.7).astype(np.float32)


def _weight(shape: tuple[int, ...], k: int) -> np.ndarray:
    return (np.cos(np.arange(np.prod(shape)).reshape(shape) * 0.37 + k) * 0.5).astype(np.float32)


KERAS = [
    ("simple_rnn", {}, [[-0.051821, -0.223948], [0.306539, 0.204452]]),
    ("lstm", {}, [[-0.119992, -0.098916], [-0.134196, -0.118899]]),
    ("lstm", {"return_sequences": True, "go_backwards": True},
     [[[-0.070076, -0.063441], [-0.110697, -0.085052], [-0.129610, -0.111480],
       [-0.127746, -0.109296]],
      [[-0.095804, -0.087223], [-0.112811, -0.099938], [-0.125655, -0.099048],
       [-0.134377, -0.115606]]]),
    ("gru", {}, [[-0.123552, 0.089843], [-0.319841, -0.239996]]),
    ("gru", {"reset_after": False}, [[-0.272548, -0.133253], [-0.418659, -0.392053]]),
]


def _layer(name: str, **args):
    return LAYER_TYPES[name](LAYERS.args[name](**args))


@pytest.mark.parametrize(("name", "args", "expected"), KERAS,
                         ids=[f"{n}-{'-'.join(a) or 'default'}" for n, a, _ in KERAS])
def test_outputs_match_keras(name, args, expected):
    layer = _layer(name, units=2, **args)
    params, state, shape = layer.init(jax.random.key(0), (4, 3))
    params = {key: jnp.asarray(_weight(params[key].shape, i))
              for i, key in enumerate(("kernel", "recurrent_kernel", "bias"))}
    y, _ = layer.apply(params, state, jnp.asarray(X))
    assert y.shape[1:] == shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=2e-6)


@pytest.mark.parametrize(("name", "args", "count"), [
    ("simple_rnn", {}, 3 * 5 + 5 * 5 + 5),
    ("lstm", {}, 4 * (3 * 5 + 5 * 5 + 5)),
    ("gru", {}, 3 * (3 * 5 + 5 * 5 + 2 * 5)),  # reset_after: two bias rows
    ("gru", {"reset_after": False}, 3 * (3 * 5 + 5 * 5 + 5)),
    ("lstm", {"use_bias": False}, 4 * (3 * 5 + 5 * 5)),
])
def test_parameter_counts_are_keras(name, args, count):
    params, _, _ = _layer(name, units=5, **args).init(jax.random.key(0), (7, 3))
    assert sum(v.size for v in params.values()) == count


def test_lstm_forget_gate_bias_starts_at_one():
    params, _, _ = _layer("lstm", units=2).init(jax.random.key(0), (4, 3))
    np.testing.assert_array_equal(params["bias"], [0, 0, 1, 1, 0, 0, 0, 0])
    params, _, _ = _layer("lstm", units=2, unit_forget_bias=False).init(jax.random.key(0), (4, 3))
    np.testing.assert_array_equal(params["bias"], np.zeros(8))


def test_dropout_masks_each_sequence_once():
    """Keras draws one input mask per sequence and reuses it at every step."""
    layer = _layer("simple_rnn", units=3, activation="linear", dropout=0.5,
                   return_sequences=True, use_bias=False)
    params = {"kernel": jnp.eye(3), "recurrent_kernel": jnp.zeros((3, 3))}
    x = jnp.ones((64, 5, 3))
    y, _ = layer.apply(params, {}, x, training=True, rng=jax.random.key(7))
    y = np.asarray(y)
    assert set(np.unique(y)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)
    np.testing.assert_array_equal(y, np.repeat(y[:, :1], 5, axis=1))  # the same at every step
    same, _ = layer.apply(params, {}, x, training=False)
    np.testing.assert_array_equal(same, x)


def test_bfloat16_carries_stay_bfloat16():
    layer = _layer("lstm", units=4, return_sequences=True)
    params, state, _ = layer.init(jax.random.key(0), (6, 3))
    params = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params)
    y, _ = layer.apply(params, state, jnp.ones((2, 6, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 6, 4)


def test_fit_summary_and_predict_from_the_cli(tmp_path):
    summary = nntrain("summary", str(TINY_LSTM))
    assert summary.exit_code == 0, summary.output
    assert "lstm (LSTM)" in summary.output and "(None, 4, 16)" in summary.output
    assert "gru (GRU)" in summary.output and "Total params: 1,995" in summary.output

    fit = nntrain("fit", str(TINY_LSTM), "--runs-dir", str(tmp_path / "runs"))
    assert fit.exit_code == 0, fit.output
    (run,) = (tmp_path / "runs" / "tiny_lstm").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.6  # three classes: chance is a third

    predict = nntrain("predict", str(run), "--split", "test", "--output", str(tmp_path / "p.npy"))
    assert predict.exit_code == 0, predict.output
    assert np.load(tmp_path / "p.npy").shape == (100, 3)


def test_a_flat_input_is_refused_with_the_fix(tmp_path):
    result = nntrain("validate", str(TINY_LSTM), "--set", "model.input=[16]")
    assert result.exit_code == 2
    assert "lstm takes sequences of shape (timesteps, features)" in result.output
    assert "got examples of shape (16,)" in result.output


def test_recurrent_kernel_takes_a_constraint(tmp_path):
    from nntrain import checkpoint

    result = nntrain(
        "fit", str(TINY_LSTM), "-q", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
        "--set", "model.layers[0].lstm.recurrent_constraint={max_norm: {max_value: 0.3}}")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "tiny_lstm").iterdir()
    arrays, _ = checkpoint.load(run / "checkpoints" / "last")
    recurrent = arrays["params/lstm/recurrent_kernel"]
    assert recurrent.shape == (16, 64)
    norms = np.sqrt((recurrent ** 2).sum(axis=0))  # Keras's max_norm: per column (axis 0)
    assert 0.25 < norms.max() <= 0.3 + 1e-6  # clipped to the bound (orthogonal init: ~0.5)


def test_recurrent_kernel_takes_a_regularizer():
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    setup = prepare(load_config(TINY_LSTM, [
        "model.layers[0].lstm.recurrent_regularizer={l2: 0.01}",
        "model.layers[1].gru.kernel_regularizer={l1: 0.1}"]))
    params, _ = setup.model.init(jax.random.key(0))
    expected = 0.01 * jnp.sum(params["lstm"]["recurrent_kernel"] ** 2) \
        + 0.1 * jnp.sum(jnp.abs(params["gru"]["kernel"]))
    np.testing.assert_allclose(setup.model.penalty(params), expected, rtol=1e-6)


# Keras 3.15's Bidirectional(LSTM(2)) and Bidirectional(GRU(2, return_sequences=True)) for
# weights _weight(shape, i), i counting forward then backward kernel, recurrent_kernel, bias.
BIDIRECTIONAL = [
    ({"lstm": {"units": 2}}, [[-0.119992, -0.098916, 0.250982, 0.241822],
                              [-0.134196, -0.118899, 0.321357, 0.299224]]),
    ({"gru": {"units": 2, "return_sequences": True}},
     [[[-0.081666, 0.094345, 0.254047, 0.140968], [-0.303761, -0.234277, 0.284966, 0.232127],
       [-0.207992, -0.089888, 0.100346, 0.010583], [-0.123552, 0.089843, 0.037772, -0.033210]],
      [[-0.261372, -0.280097, 0.353150, 0.294288], [-0.193329, -0.114409, 0.219140, 0.118397],
       [-0.122662, 0.073760, 0.210315, 0.129733], [-0.319841, -0.239996, 0.225310, 0.218376]]]),
]


@pytest.mark.parametrize(("inner", "expected"), BIDIRECTIONAL, ids=["lstm", "gru-sequences"])
def test_bidirectional_matches_keras(inner, expected):
    layer = LAYER_TYPES["bidirectional"](LAYERS.args["bidirectional"].model_validate(inner))
    params, state, shape = layer.init(jax.random.key(0), (4, 3))
    names = [f"{side}_{w}" for side in ("forward", "backward")
             for w in ("kernel", "recurrent_kernel", "bias")]
    assert sorted(params) == sorted(names)
    params = {name: jnp.asarray(_weight(params[name].shape, i)) for i, name in enumerate(names)}
    y, _ = layer.apply(params, state, jnp.asarray(X))
    assert y.shape[1:] == shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=2e-6)


def test_bidirectional_from_the_cli(tmp_path):
    wrap = "model.layers[0]={bidirectional: {lstm: {units: 8, return_sequences: true}}}"
    summary = nntrain("summary", str(TINY_LSTM), "--set", wrap)
    assert summary.exit_code == 0, summary.output
    assert "(Bidirectional)" in summary.output and "(None, 4, 16)" in summary.output
    assert f"{2 * 4 * (4 * 8 + 8 * 8 + 8):,}" in summary.output  # two LSTMs' weights

    fit = nntrain("fit", str(TINY_LSTM), "-q", "--epochs", "1", "--runs-dir",
                  str(tmp_path / "runs"), "--set", wrap)
    assert fit.exit_code == 0, fit.output

    typo = nntrain("validate", str(TINY_LSTM), "--set",
                   "model.layers[0]={bidirectional: {lsmt: 8}}")
    assert typo.exit_code == 2
    assert "unknown recurrent layer 'lsmt'; did you mean 'lstm'?" in typo.output
    backwards = nntrain("validate", str(TINY_LSTM), "--set",
                        "model.layers[0]={bidirectional: {lstm: {units: 8, go_backwards: true}}}")
    assert backwards.exit_code == 2 and "leave go_backwards out" in backwards.output


def test_the_editor_schema_takes_every_form_the_loader_takes():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    result = nntrain("schema")
    validator = jsonschema.Draft7Validator(json.loads(result.stdout))
    config = yaml.safe_load(TINY_LSTM.read_text())

    def errors(layer):
        config["model"]["layers"][0] = layer
        return list(validator.iter_errors(config))

    for good in ({"lstm": 16}, {"bidirectional": {"lstm": 8}},
                 {"bidirectional": {"lstm": 8, "merge_mode": "sum", "name": "both_ways"}},
                 {"bidirectional": {"gru": {"units": 8, "return_sequences": True}}},
                 {"bidirectional": {"layer": {"simple_rnn": 8}, "merge_mode": "sum"}}):
        assert not errors(good), good
    for bad in ({"lstm": {"units": 8, "forget_bias": 1.0}},
                {"bidirectional": {"layer": {"gru": 8}, "merge_mode": "avg"}}):
        assert errors(bad), bad


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_recurrent_dropout_gives_every_gate_its_own_masks():
    """Keras's LSTM with recurrent_dropout (its implementation 1): gate g sees the inputs
    masked by input_mask[g] and the carried output masked by recurrent_mask[g]; the masks
    are drawn once per sequence."""
    layer = _layer("lstm", units=3, dropout=0.3, recurrent_dropout=0.4)
    params, state, _ = layer.init(jax.random.key(0), (4, 2))
    x = np.random.default_rng(1).normal(size=(5, 4, 2)).astype(np.float32)
    key = jax.random.key(2)
    y, _ = layer.apply(params, state, jnp.asarray(x), training=True, rng=key)
    inputs, recurrent = (np.asarray(m) for m in layer.dropout_masks(key, 5, 2, jnp.float32))
    assert inputs.shape == (4, 5, 2) and recurrent.shape == (4, 5, 3)
    assert not all(np.array_equal(inputs[0], m) for m in inputs[1:])

    kernel, rec, bias = (np.asarray(params[k]).reshape(-1, 4, 3) if k != "bias"
                         else np.asarray(params[k]).reshape(4, 3)
                         for k in ("kernel", "recurrent_kernel", "bias"))
    h = c = np.zeros((5, 3), np.float32)
    for t in range(4):
        i, f, g, o = ((x[:, t] * inputs[n]) @ kernel[:, n] + (h * recurrent[n]) @ rec[:, n]
                      + bias[n] for n in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
    np.testing.assert_allclose(np.asarray(y), h, atol=1e-5)

    shared = _layer("lstm", units=3, dropout=0.3)  # without recurrent_dropout: one mask
    assert shared.dropout_masks(key, 5, 2, jnp.float32)[0].shape == (5, 2)


def test_an_orthogonal_bias_is_refused_before_training():
    result = nntrain("validate", str(TINY_LSTM), "--set",
                     "model.layers[0].lstm.bias_initializer=orthogonal")
    assert result.exit_code == 2 and "orthogonal" in result.output


def test_bidirectional_short_form_takes_its_own_keys_beside_the_layer(tmp_path):
    config = tmp_path / "bi.yaml"
    text = TINY_LSTM.read_text().replace(
        "    - lstm: {units: 16, return_sequences: true}\n",
        "    - bidirectional:\n        lstm:\n          unit: 16\n")
    config.write_text(text)
    typo = nntrain("validate", str(config))
    assert typo.exit_code == 2
    # the place as the file has it: no `layer` step the short form leaves out
    assert "bi.yaml:14:11: " in typo.output  # the `unit:` line
    assert "lstm.unit: unknown key 'unit'; did you mean 'units'?" in typo.output
    assert ".layer." not in typo.output
    config.write_text(text.replace("unit: 16", "units: 16\n          return_sequences: true"))
    for extra in ("model.layers[0].bidirectional.merge_mode=sum",
                  "model.layers[0].bidirectional.name=both_ways"):
        result = nntrain("validate", str(config), "--set", extra)
        assert result.exit_code == 0, result.output
    inner = nntrain("validate", str(config), "--set",
                    "model.layers[0].bidirectional.lstm.activity_regularizer=l2")
    assert inner.exit_code == 2
    assert "activity_regularizer of the wrapped layer: give it to bidirectional itself" \
        in inner.output


# -- mask_zero: padded steps skipped, as Keras passes an embedding's mask on -----------------
IDS = np.array([[3, 5, 2, 0, 0], [0, 0, 7, 1, 4], [9, 0, 3, 0, 2]], np.int32)
MASKED = [  # Keras 3.15, same weights (_weight(shape, i) in Keras's weight order)
    ([{"lstm": 2}], [[-0.017760, 0.055113], [-0.031308, 0.030229], [0.008329, 0.092546]]),
    ([{"bidirectional": {"gru": {"units": 2, "return_sequences": True}}},
      "global_average_pooling1d"],
     [[0.118671, 0.221691, -0.034394, -0.118757], [0.042718, 0.147010, -0.018299, -0.101500],
      [0.136137, 0.241024, -0.042953, -0.131078]]),
]


def _masked_config(tmp_path, layers) -> Path:
    import yaml

    config = {"name": "masked", "data": {"dataset": "synthetic"},
              "model": {"inputs": {"ids": {"shape": [5], "dtype": "int32"}},
                        "layers": [{"embedding": {"inputs": "ids", "input_dim": 10,
                                                  "output_dim": 3, "mask_zero": True}},
                                   *layers]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    path = tmp_path / "masked.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(("layers", "expected"), MASKED, ids=["lstm", "bidirectional-gap"])
def test_mask_zero_skips_padded_steps_as_keras_does(tmp_path, layers, expected):
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    model = prepare(load_config(_masked_config(tmp_path, layers), [])).model
    params, state = model.init(jax.random.key(0))
    order = {"embedding": ["embeddings"], "bidirectional": [
        f"{side}_{w}" for side in ("forward", "backward")
        for w in ("kernel", "recurrent_kernel", "bias")]}
    i = 0
    for node in model.graph.nodes:
        for name in order.get(node.type, ["kernel", "recurrent_kernel", "bias"]):
            if name in params.get(node.name, {}):
                params[node.name][name] = jnp.asarray(_weight(params[node.name][name].shape, i))
                i += 1
    outputs, _, _ = model.apply(params, state, {"ids": jnp.asarray(IDS)})
    np.testing.assert_allclose(np.asarray(outputs[model.output_names[0]]), expected, atol=2e-6)
    # padding changes nothing, wherever it is: one sequence padded three ways
    same = np.array([[3, 5, 2, 0, 0], [0, 0, 3, 5, 2], [0, 3, 0, 5, 2]], np.int32)
    y = np.asarray(model.apply(params, state, {"ids": jnp.asarray(same)})[0][
        model.output_names[0]])
    np.testing.assert_allclose(y[1:], y[[0, 0]], atol=1e-6)


def test_a_mask_that_would_be_lost_is_refused(tmp_path):
    flat = nntrain("validate", str(_masked_config(tmp_path, ["flatten", {"dense": 2}])))
    assert flat.exit_code == 2
    assert "layer 'flatten' (flatten) cannot take the mask that mask_zero on embedding " \
        "'embedding' puts on padded steps" in flat.output
    sequence = nntrain("validate", str(_masked_config(
        tmp_path, [{"lstm": {"units": 2, "return_sequences": True}}])))
    assert sequence.exit_code == 0, sequence.output  # its loss leaves the padded steps out
    fine = nntrain("validate", str(_masked_config(
        tmp_path, [{"dense": 4}, {"dropout": 0.2}, {"gru": 2}])))
    assert fine.exit_code == 0, fine.output


# -- a loss over masked steps: the padded steps count for no loss and no metric ------------
TAGS = np.array([[0, 1, 2, 0, 0], [1, 1, 2, 0, 1], [2, 0, 1, 2, 0]], np.int32)
TAGGER = [{"lstm": {"units": 4, "return_sequences": True}},
          {"dense": {"units": 3, "activation": "softmax", "name": "tags"}}]


def test_a_loss_over_masked_steps_is_keras_s(tmp_path):
    """Keras 3.15's evaluate of Embedding(10, 3, mask_zero) -> LSTM(4, return_sequences) ->
    Dense(3, softmax) with sparse_categorical_crossentropy: 1.1078482 (and 1.2911042 with
    sample weights 1, 2, 0.5): the real steps' mean, over the batch; accuracy 3 of 9."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config
    from nntrain.train.programs import Programs

    config = yaml.safe_load(_masked_config(tmp_path, TAGGER).read_text())
    config["compile"] = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
                         "optimizer": "adam"}
    setup = prepare(load_config(_write(tmp_path, config), []))
    params, state = setup.model.init(jax.random.key(0))
    i = 0
    for node in setup.model.graph.nodes:
        for name, value in params.get(node.name, {}).items():
            params[node.name][name] = jnp.asarray(_weight(value.shape, i))
            i += 1
    programs = Programs(setup, batch_size=3, eval_batch_size=3, steps_per_call=1)
    ids, rows = jnp.asarray(IDS[:, :5]), jnp.ones(3)
    for weights, expected in [([1.0, 1.0, 1.0], 1.1078482), ([1.0, 2.0, 0.5], 1.2911042)]:
        loss, (sums, _) = programs._batch(
            params, state, {"ids": ids}, {"tags": jnp.asarray(TAGS)},
            {"tags": jnp.asarray(weights)}, jnp.asarray(3), training=False, rng=None, mask=rows)
        assert float(loss) == pytest.approx(expected, abs=1e-6)
        np.testing.assert_allclose(np.asarray(sums)[-2:], [3, 9])  # 3 of the 9 real steps
    # a padded row of the last batch counts for nothing
    padded = programs._batch(params, state, {"ids": ids}, {"tags": jnp.asarray(TAGS)},
                             {"tags": jnp.asarray([1.0, 1.0, 0.0])}, jnp.asarray(2),
                             training=False, rng=None, mask=jnp.asarray([1.0, 1.0, 0.0]))
    alone = programs._batch(params, state, {"ids": ids[:2]}, {"tags": jnp.asarray(TAGS[:2])},
                            {"tags": jnp.ones(2)}, jnp.asarray(2), training=False, rng=None,
                            mask=jnp.ones(2))
    assert float(padded[0]) == pytest.approx(float(alone[0]), abs=1e-6)


def test_fit_a_tagger_of_padded_sequences_from_the_cli(tmp_path):
    """Tag each real step: is its id above 5? The padded steps (id 0) get random tags, which
    no model can learn: counted, they would hold the accuracy near 0.78; left out of the
    loss and the accuracy, as they should be, a model that learned the rule scores 1."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 600)
    real = np.arange(8) < lengths[:, None]
    ids = rng.integers(1, 10, (600, 8)) * real
    tags = np.where(real, ids > 5, rng.integers(0, 2, (600, 8)))
    np.savez(tmp_path / "seq.npz", x=ids.astype(np.int32), y=tags.astype(np.int32))
    config = _tagger(steps=8, width=8)
    config["data"].update(validation={"last": 100}, test={"last": 100})
    config["compile"].update(optimizer={"adam": 0.02}, metrics=["accuracy"])
    config["fit"] = {"epochs": 8, "batch_size": 32}
    result = nntrain("fit", str(_write(tmp_path, config)), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "tagger").iterdir()
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.98
    # predict names a class per step, in the table and in the CSV
    shown = nntrain("predict", str(run), "--split", "test", "--limit", "2")
    assert shown.exit_code == 0 and "class per step" in shown.output, shown.output
    ranked = nntrain("predict", str(run), "--split", "test", "--limit", "2", "--top", "2")
    assert ranked.exit_code == 2
    assert "this model's output is a class per step of a sequence" in ranked.output
    # padded steps (masked out of the loss and metrics) get no class: '·' in the table
    steps = [line.split("│")[2].split() for line in shown.output.splitlines()
             if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert [s.count("·") for s in steps] == [8 - n for n in lengths[-100:-98]]
    written = nntrain("predict", str(run), "--split", "test", "-o", str(tmp_path / "p.csv"))
    assert written.exit_code == 0, written.output
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    kept = real[-100:]
    # ... and empty cells in the CSV
    assert all((r[f"class_{t}"] == "") == (not kept[i, t]) for i, r in enumerate(rows)
               for t in range(8))
    predicted = np.array([[int(r[f"class_{t}"] or -1) for t in range(8)] for r in rows])
    true = np.array([[int(r[f"true_class_{t}"] or -1) for t in range(8)] for r in rows])
    assert (true == tags[-100:])[kept].all()
    assert (predicted == true)[kept].mean() > 0.98


def train_masked(tmp_path, layers) -> tuple[np.ndarray, dict]:
    """The output and new state of embedding (mask_zero, _weight((10, 3), 0)) -> `layers`,
    called in training on IDS."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    model = prepare(load_config(_masked_config(tmp_path, layers), [])).model
    params, state = model.init(jax.random.key(0))
    params["embedding"]["embeddings"] = jnp.asarray(_weight((10, 3), 0))
    outputs, _, new_state = model.apply(params, state, {"ids": jnp.asarray(IDS)}, training=True,
                                        rng=jax.random.key(1), mask=jnp.ones(3))
    return np.asarray(outputs[model.output_names[0]]), new_state


def test_batch_normalization_leaves_padded_steps_out_of_its_statistics(tmp_path):
    """Keras 3.15: Embedding(10, 3, mask_zero) -> BatchNormalization(momentum=0.5) ->
    GlobalAveragePooling1D, called in training on IDS; embeddings _weight((10, 3), 0)."""
    output, new_state = train_masked(tmp_path, [{"batch_normalization": {"momentum": 0.5}},
                                                "global_average_pooling1d"])
    np.testing.assert_allclose(output, [
        [0.089822, 0.161167, 0.198637], [0.703845, 0.539565, 0.277707],
        [-0.793667, -0.700733, -0.476344]], atol=2e-6)
    moving = new_state["batch_normalization"]
    np.testing.assert_allclose(moving["moving_mean"], [-0.083767, -0.087568, -0.079517],
                               atol=2e-6)
    np.testing.assert_allclose(moving["moving_variance"], [0.544344, 0.543175, 0.548085],
                               atol=2e-6)


def test_what_a_padded_step_computes_stays_out_of_the_loss():
    """A label out of range at a padded step makes a NaN there; it must not reach the loss."""
    from nntrain.losses import build_loss

    loss = build_loss("sparse_categorical_crossentropy", None, "softmax")
    logits = jnp.zeros((1, 3, 2))
    per_example = loss.fn(jnp.asarray([[0, 1, 99]]), logits, jnp.asarray([[1.0, 1.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(per_example), [2 * np.log(2)], rtol=1e-6)


def test_tagger_data_errors_say_what_to_do(tmp_path):
    ids = np.array([[3, 5, 0], [4, 0, 0]] * 8, np.int32)
    tags = np.where(ids > 0, ids > 3, -1)  # padding tagged -1: out of range
    np.savez(tmp_path / "seq.npz", x=ids, y=tags.astype(np.int32),
             w=np.ones(ids.shape, np.float32))
    config = _tagger(steps=3, width=4)
    labels = nntrain("fit", str(_write(tmp_path, config)), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert labels.exit_code == 2
    assert "padded steps need a label in that range too (0, say), though the loss leaves " \
        "them out" in labels.output
    np.savez(tmp_path / "seq.npz", x=ids, y=np.maximum(tags, 0).astype(np.int32),
             w=np.ones(ids.shape, np.float32))
    config["data"]["sample_weight"] = "w"
    weights = nntrain("fit", str(_write(tmp_path, config)), "-q", "--runs-dir",
                      str(tmp_path / "runs"))
    assert weights.exit_code == 2
    assert "sample weights of shape (16, 3): give one number per example (weights per step " \
        "of a sequence are not supported)" in weights.output
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_metrics_that_cannot_leave_out_masked_steps_are_refused(tmp_path):
    config = yaml.safe_load(_masked_config(tmp_path, TAGGER).read_text())
    config["compile"] = {"loss": "sparse_categorical_crossentropy", "optimizer": "adam",
                         "metrics": ["accuracy", {"auc": {}}]}
    result = nntrain("validate", str(_write(tmp_path, config)))
    assert result.exit_code == 2
    assert "auc cannot leave out the masked steps of output 'tags'" in result.output


def test_fit_a_padded_sequence_classifier_from_the_cli(tmp_path):
    """Variable-length sequences padded with 0: is token 7 anywhere in the sequence?"""
    assert fit_token_seven_task(tmp_path, [{"gru": 16}], learning_rate=0.02, epochs=12) > 0.9


def test_masking_layer_skips_steps_as_keras_does(tmp_path):
    """Keras's Masking(-1.0) then LSTM(2): steps whose features are all -1 are skipped."""
    config = {"name": "masking", "data": {"dataset": "synthetic"},
              "model": {"input": [4, 3], "layers": [{"masking": -1.0}, {"lstm": 2}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    (tmp_path / "masking.yaml").write_text(yaml.safe_dump(config))
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    model = prepare(load_config(tmp_path / "masking.yaml", [])).model
    params, state = model.init(jax.random.key(0))
    params["lstm"] = {k: jnp.asarray(_weight(params["lstm"][k].shape, i))
                      for i, k in enumerate(("kernel", "recurrent_kernel", "bias"))}
    x = X.copy()
    x[0, 1] = x[1, 3] = x[1, 0] = -1.0
    y = model.apply(params, state, {"input": jnp.asarray(x)})[0]["lstm"]
    np.testing.assert_allclose(np.asarray(y), [[-0.111682, -0.091899], [-0.102188, -0.08339]],
                               atol=2e-6)
    masked = model.layers["masking"].apply({}, {}, jnp.asarray(x))[0]
    np.testing.assert_array_equal(np.asarray(masked)[0, 1], 0.0)  # as Keras: zeros out
    np.testing.assert_array_equal(np.asarray(masked)[0, 0], x[0, 0])
    flat = nntrain("validate", str(_write(tmp_path, {**config, "model": {
        "input": [4, 3], "layers": [{"masking": -1.0}, "flatten", {"dense": 1}]}})))
    assert flat.exit_code == 2
    assert "cannot take the mask that masking layer 'masking' puts on padded steps" in \
        flat.output and "or drop the masking layer" in flat.output


def test_a_layer_that_cannot_be_built_is_reported_before_the_mask_is_followed(tmp_path):
    config = {"name": "broken", "data": {"dataset": "synthetic"},
              "model": {"input": [8], "layers": [{"masking": 0.0}, {"dense": 3}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    result = nntrain("validate", str(_write(tmp_path, config)))
    assert result.exit_code == 2, result.output
    assert "layer 'masking' (masking) cannot take input shape (None, 8): it takes sequences, " \
        "(steps, features); got (8,)" in result.output
    assert "Traceback" not in result.output


def _tagger(steps: int, width: int) -> dict:
    """A config that tags each step of padded id sequences in seq.npz: embedding (mask_zero),
    a gru over the steps, a softmax over 2 tags per step."""
    return {"name": "tagger", "data": {"train": "seq.npz"},
            "model": {"inputs": {"x": {"shape": [steps], "dtype": "int32"}},
                      "layers": [{"embedding": {"inputs": "x", "input_dim": 10,
                                                "output_dim": width, "mask_zero": True}},
                                 {"gru": {"units": width, "return_sequences": True}},
                                 {"dense": {"units": 2, "activation": "softmax",
                                            "name": "y"}}]},
            "compile": {"loss": "sparse_categorical_crossentropy", "optimizer": "adam"}}


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_users_layer_may_take_the_mask(tmp_path):
    """A `module:Class` layer that says `time_mask_mode = "uses"` receives `time_mask`."""
    (tmp_path / "pooling.py").write_text(
        "import jax.numpy as jnp\n\n\n"
        "class MaskedSum:\n"
        "    time_mask_mode = 'uses'\n\n"
        "    def __init__(self, args):\n        self.args = args\n\n"
        "    def init(self, rng, input_shape):\n        return {}, {}, input_shape[-1:]\n\n"
        "    def apply(self, params, state, x, *, training=False, rng=None, time_mask=None):\n"
        "        return jnp.sum(x * time_mask[:, :, None], axis=1), state\n")
    config = _masked_config(tmp_path, ["pooling:MaskedSum", {"dense": 2}])
    result = nntrain("summary", str(config))
    assert result.exit_code == 0, result.output
    assert "MaskedSum" in result.output


# -- return_state and initial_state: an encoder's final state starts a decoder ---------------
X2 = np.cos(np.arange(2 * 4 * 3).reshape(2, 4, 3) * 0.3).astype(np.float32)
# Keras 3.15: enc = LSTM(2, return_state=True) on X (weights _weight(shape, 0..2)), dec =
# LSTM(2, return_sequences=True) on X2 with initial_state=enc's states (weights 3..5);
# model outputs [dec, enc's output, enc's states]
SEQ2SEQ = [
    ("lstm", {}, [[[-0.003424, 0.038247], [0.123093, 0.14554], [0.244966, 0.214414],
                   [0.332636, 0.256191]],
                  [[0.048135, 0.02896], [0.149356, 0.125406], [0.16671, 0.179485],
                   [0.174012, 0.209686]]],
     [[[-0.119992, -0.098916], [-0.134196, -0.118899]],
      [[-0.276191, -0.213231], [-0.338843, -0.268347]]]),
    ("gru", {}, [[[0.008298, 0.104103], [0.146681, 0.177676], [0.252492, 0.238864],
                  [0.302699, 0.247112]],
                 [[-0.143536, -0.141364], [-0.047785, -0.101052], [0.026496, -0.051137],
                  [0.116865, 0.044204]]],
     [[[-0.123552, 0.089843], [-0.319841, -0.239996]]]),
    ("simple_rnn", {}, [[[-0.679952, -0.405408], [-0.106671, -0.059203], [0.523982, 0.473955],
                         [0.738572, 0.745369]],
                        [[0.688296, 0.717517], [-0.048505, 0.407645], [-0.541488, -0.086828],
                         [-0.580895, -0.30996]]],
     [[[-0.051821, -0.223948], [0.306539, 0.204452]]]),
    ("lstm", {"go_backwards": True},
     [[[0.085998, 0.05253], [0.233161, 0.177855], [0.269704, 0.250836], [0.232658, 0.258395]],
      [[-0.022589, 0.023013], [0.066866, 0.107572], [0.152723, 0.155789], [0.256325, 0.202269]]],
     [[[-0.127746, -0.109296], [-0.134377, -0.115606]],
      [[-0.295392, -0.23655], [-0.338952, -0.260557]]]),
]


def _keras_weights(params: dict, first: int) -> dict:
    return {key: jnp.asarray(_weight(params[key].shape, first + i))
            for i, key in enumerate(("kernel", "recurrent_kernel", "bias"))}


@pytest.mark.parametrize(("name", "args", "decoded", "states"), SEQ2SEQ,
                         ids=["lstm", "gru", "simple_rnn", "lstm-go_backwards"])
def test_return_state_and_initial_state_match_keras(name, args, decoded, states):
    parts = ["encoder.h", "encoder.c"] if name == "lstm" else ["encoder.h"]
    encoder = _layer(name, units=2, return_state=True, **args)
    decoder = _layer(name, units=2, return_sequences=True, initial_state=parts, **args)
    made, _, _ = encoder.init(jax.random.key(0), (4, 3))
    (y, *final), _ = encoder.apply(_keras_weights(made, 0), {}, jnp.asarray(X),
                                   with_states=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(final[0]))  # h is the output
    np.testing.assert_allclose(np.asarray(final), states, atol=2e-6)
    made, _, shape = decoder.init(jax.random.key(0), [(4, 3)] + [(2,)] * len(parts))
    z, _ = decoder.apply(_keras_weights(made, 3), {}, [jnp.asarray(X2), *final])
    assert z.shape[1:] == shape == (4, 2)
    np.testing.assert_allclose(np.asarray(z), decoded, atol=2e-6)


def test_the_final_state_is_the_last_real_step_s():
    """Keras 3.15: LSTM(2, return_state=True)(X, mask=M), weights _weight(shape, 0..2)."""
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    encoder = _layer("lstm", units=2, return_state=True)
    made, _, _ = encoder.init(jax.random.key(0), (4, 3))
    (_, h, c), _ = encoder.apply(_keras_weights(made, 0), {}, jnp.asarray(X), with_states=True,
                                 time_mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(h), [[-0.118771, -0.108355], [-0.134196, -0.118899]],
                               atol=2e-6)
    np.testing.assert_allclose(np.asarray(c), [[-0.299134, -0.244974], [-0.338843, -0.268347]],
                               atol=2e-6)


SEQ2SEQ_CONFIG = """\
name: seq2seq
seed: 3
data:
  dataset: synthetic
  synthetic: {samples: 200, test_samples: 20, classes: 5}
  validation: {last: 40}
model:
  inputs: {source: {shape: [6, 3]}, target: {shape: [6, 3]}}
  layers:
    - lstm: {units: 8, return_state: true, inputs: source, name: encoder}
    - lstm: {units: 8, return_sequences: true, inputs: target, name: decoder,
             initial_state: [encoder.h, encoder.c]}
    - global_average_pooling1d
    - dense: {units: 5, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: adam
fit: {epochs: 2, batch_size: 20}
"""


def test_an_encoder_decoder_trains_from_the_cli(tmp_path):
    config = tmp_path / "seq2seq.yaml"
    config.write_text(SEQ2SEQ_CONFIG)
    summary = nntrain("summary", str(config))
    assert summary.exit_code == 0, summary.output
    assert "encoder.h" in summary.output and "encoder.c" in summary.output  # Connected to
    assert "recurrent_state" not in summary.output.lower()  # the states have no rows
    assert "[(None, 8), (None, 8), (None, 8)]" in " ".join(  # Keras's: output, h, c
        line.split("│")[2].strip() for line in summary.output.splitlines()
        if line.count("│") > 3)
    fit = nntrain("fit", str(config), "-q", "--runs-dir", str(tmp_path / "runs"))
    assert fit.exit_code == 0, fit.output
    run = next((tmp_path / "runs" / "seq2seq").iterdir())
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["val_loss"])) for r in rows)
    predicted = nntrain("predict", str(run), "--split", "test", "--limit", "2")
    assert predicted.exit_code == 0, predicted.output


@pytest.mark.parametrize(("edit", "message"), [
    (("return_state: true, ", ""),
     "'encoder.h' for the initial_state of 'decoder' is the final state of 'encoder', "
     "which needs return_state: true"),
    (("[encoder.h, encoder.c]", "[encoder.h]"),
     "initial_state: this layer's state is 2 nodes ([NODE.h, NODE.c]), got 1"),
    (("lstm: {units: 8, return_state", "gru: {units: 8, return_state"),
     "'encoder' has no state 'c': its final state is 'encoder.h'"),
    (("lstm: {units: 8, return_state", "lstm: {units: 4, return_state"),
     "its initial_state 'encoder.h' has examples of shape (4,); a state of 8 units is (8,)"),
    (("lstm: {units: 8, return_state: true, inputs: source, name: encoder}",
      "bidirectional: {lstm: {units: 8, return_state: true}, inputs: source, name: encoder}"),
     "'encoder' has no state 'h': its final state is 'encoder.forward_h', 'encoder.forward_c',"
     " 'encoder.backward_h', 'encoder.backward_c'"),
    (("    - global_average_pooling1d\n",
      "    - shared: {layer: encoder, inputs: target, name: again}\n"
      "    - concatenate: {inputs: [decoder, again]}\n    - global_average_pooling1d\n"),
     "'encoder' has return_state or initial_state, which a shared call cannot have"),
    (("initial_state: [encoder.h, encoder.c]", "initial_state: []"),
     "initial_state is an empty list: name the state's nodes, or leave initial_state out"),
    (("initial_state: [encoder.h, encoder.c]", "return_state: true, "
      "initial_state: [decoder.h, decoder.c]"),
     "'decoder' cannot start from its own final state 'decoder.h'"),
    (("lstm: {units: 8, return_sequences: true, inputs: target, name: decoder,\n"
      "             initial_state: [encoder.h, encoder.c]}",
      "bidirectional: {inputs: target, name: decoder, lstm: {units: 8, return_sequences: "
      "true, initial_state: [encoder.h, encoder.c]}}"),
     "initial_state of the wrapped layer: not supported inside bidirectional; give it to a "
     "recurrent layer of its own"),
    (("compile:", "  outputs: [dense, encoder.h]\ncompile:"),
     "'encoder.h' is a recurrent layer's final state, which cannot be a model output itself: "
     "give it a layer of its own, e.g. `- activation: {activation: linear, inputs: encoder.h, "
     "name: encoder_h}`, and list that"),
])
def test_state_wiring_mistakes_are_config_errors(tmp_path, edit, message):
    config = tmp_path / "seq2seq.yaml"
    config.write_text(SEQ2SEQ_CONFIG.replace(*edit))
    result = nntrain("validate", str(config))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("wrapped", ["{lstm: {units: 8, return_state: true}}",
                                     "{bidirectional: {lstm: {units: 8, return_state: true}}}"])
def test_time_distributed_takes_no_state_wiring(wrapped):
    result = nntrain("validate", str(TINY_LSTM), "--set",
                     f"model.layers[0]={{time_distributed: {wrapped}}}")
    assert result.exit_code == 2
    assert "return_state of the wrapped layer: not supported inside time_distributed" in \
        " ".join(result.output.split())


def test_a_state_name_that_cannot_be_one_is_said_in_words(tmp_path):
    config = tmp_path / "seq2seq.yaml"
    config.write_text(SEQ2SEQ_CONFIG.replace("encoder.c]", "encoder.x]"))
    result = nntrain("validate", str(config))
    assert result.exit_code == 2
    assert "initial_state[1]: expected a node name of letters, digits and '_', not starting " \
           "with a digit, or a recurrent layer's final state: NAME.h, NAME.c (an LSTM's), or " \
           "a bidirectional layer's NAME.forward_h, NAME.backward_h, ..., found 'encoder.x'" \
        in " ".join(result.output.split())


# Keras 3.15: Bidirectional(LSTM(2, return_state=True)) on X, weights _weight(shape, 0..5) in
# Keras's order (forward kernel, recurrent kernel, bias, then backward's): the output, then
# forward h, c, backward h, c
BIDIRECTIONAL_STATES = {
    "forward_h": [[-0.119992, -0.098916], [-0.134196, -0.118899]],
    "forward_c": [[-0.276191, -0.213231], [-0.338843, -0.268347]],
    "backward_h": [[0.250982, 0.241822], [0.321357, 0.299224]],
    "backward_c": [[0.473299, 0.478995], [0.583842, 0.581862]],
}


def test_a_bidirectional_encoder_s_states_match_keras(tmp_path):
    """The textbook's translation encoder: Bidirectional(LSTM(return_state=True)), each
    direction's state a node, joined to start a decoder of twice the units."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    config = {"name": "bi", "data": {"dataset": "synthetic"}, "model": {
        "inputs": {"x": {"shape": [4, 3]}},
        "layers": [
            {"bidirectional": {"lstm": {"units": 2, "return_state": True}, "name": "enc"}},
            *[{"concatenate": {"inputs": [f"enc.forward_{p}", f"enc.backward_{p}"],
                               "name": f"state_{p}"}} for p in "hc"],
            {"lstm": {"units": 4, "inputs": "x", "initial_state": ["state_h", "state_c"]}}],
        "outputs": ["enc", "state_h", "state_c", "lstm"]},
        "compile": {"loss": "mse", "optimizer": "adam"}}
    path = tmp_path / "bi.yaml"
    path.write_text(yaml.safe_dump(config))
    model = prepare(load_config(path, [])).model
    params, state = model.init(jax.random.key(0))
    names = [f"{side}_{w}" for side in ("forward", "backward")
             for w in ("kernel", "recurrent_kernel", "bias")]
    params["enc"] = {n: jnp.asarray(_weight(params["enc"][n].shape, i))
                     for i, n in enumerate(names)}
    outputs, _, _ = model.apply(params, state, {"x": jnp.asarray(X)})
    expected = BIDIRECTIONAL_STATES
    np.testing.assert_allclose(np.asarray(outputs["enc"]), np.concatenate(
        [expected["forward_h"], expected["backward_h"]], axis=-1), atol=2e-6)
    for part in "hc":
        np.testing.assert_allclose(np.asarray(outputs[f"state_{part}"]), np.concatenate(
            [expected[f"forward_{part}"], expected[f"backward_{part}"]], axis=-1), atol=2e-6)
    assert outputs["lstm"].shape == (2, 4)
    assert model.summary_rows()[-1].inputs == ("x", "state_h", "state_c")


def test_the_summary_shows_which_state_a_layer_takes(tmp_path):
    """A chain of layers but for a state: the summary keeps its Connected to column."""
    config = tmp_path / "chain.yaml"
    config.write_text(SEQ2SEQ_CONFIG.replace(
        "  inputs: {source: {shape: [6, 3]}, target: {shape: [6, 3]}}",
        "  input: [6, 3]").replace(
        "inputs: source, name: encoder}", "return_sequences: true, name: encoder}").replace(
        "    - lstm: {units: 8, return_sequences: true, inputs: target, name: decoder,\n"
        "             initial_state: [encoder.h, encoder.c]}\n"
        "    - global_average_pooling1d\n", "    - dense: {units: 8, inputs: encoder.c}\n"))
    result = nntrain("summary", str(config))
    assert result.exit_code == 0, result.output
    assert "Connected to" in result.output and "encoder.c" in result.output

