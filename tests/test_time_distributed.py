"""time_distributed: one layer applied to each step, with Keras 3's numbers, masks and errors."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain
from test_recurrent import train_masked

from nntrain.config.layers import LAYERS
from nntrain.layers import LAYER_TYPES

SEQUENCE = np.sin(np.arange(2 * 3 * 4).reshape(2, 3, 4) * 0.7).astype(np.float32)
FRAMES = np.sin(np.arange(2 * 3 * 5 * 5 * 2).reshape(2, 3, 5, 5, 2) * 0.3).astype(np.float32)


def _wrapped(entry: dict):
    return LAYER_TYPES["time_distributed"](LAYERS.args["time_distributed"](**entry))


def _run(entry: dict, x: np.ndarray, **kwargs):
    layer = _wrapped(entry)
    params, state, shape = layer.init(jax.random.key(0), x.shape[1:])
    y, new_state = layer.apply(params, state, jnp.asarray(x), **kwargs)
    assert y.shape[1:] == shape  # build's shape is the one apply gives
    return np.asarray(y), params, new_state


def test_dense_applies_one_kernel_to_every_step():
    y, params, _ = _run({"dense": {"units": 5, "activation": "tanh"}}, SEQUENCE)
    assert set(params) == {"kernel", "bias"}  # Keras's names: the wrapped layer's weights
    np.testing.assert_allclose(y, np.tanh(SEQUENCE @ params["kernel"] + params["bias"]),
                               atol=1e-6)


def test_conv2d_sees_each_frame_on_its_own():
    y, params, _ = _run({"conv2d": {"filters": 4, "kernel_size": 3}}, FRAMES)
    assert y.shape == (2, 3, 3, 3, 4)
    conv = LAYER_TYPES["conv2d"](LAYERS.args["conv2d"](filters=4, kernel_size=3))
    for t in range(3):
        frame, _ = conv.apply(params, {}, jnp.asarray(FRAMES[:, t]))
        np.testing.assert_allclose(y[:, t], frame, atol=1e-6)


def test_batch_normalization_normalizes_each_step_by_its_own_statistics():
    """Keras 3.15 runs the wrapped layer step after step: each step's batch statistics, and
    the moving averages updated once per step (TimeDistributed(BatchNormalization()) in
    training, the same input)."""
    x = (np.sin(np.arange(4 * 3 * 2).reshape(4, 3, 2) * 1.3) * 3 + 1).astype(np.float32)
    y, _, state = _run({"batch_normalization": {}}, x, training=True, rng=jax.random.key(1))
    mean, var = x.mean(axis=0), x.var(axis=0)  # per step and feature
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    np.testing.assert_allclose(state["moving_mean"], [0.0305224, 0.02980246], atol=1e-6)
    np.testing.assert_allclose(state["moving_variance"], [1.0992233, 1.1083901], atol=1e-6)


def test_dropout_draws_every_step_anew():
    y, _, _ = _run({"dropout": 0.5}, np.ones((64, 10, 8), np.float32), training=True,
                   rng=jax.random.key(1))
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs((y == 0).mean() - 0.5) < 0.03
    assert not (y[:, 0] == y[:, 1]).all()


def test_the_mask_passes_through_and_batch_normalization_skips_padded_steps(tmp_path):
    """Keras 3.15: Embedding(10, 3, mask_zero) -> TimeDistributed(BatchNormalization(
    momentum=0.5)) -> GlobalAveragePooling1D, in training on IDS; embeddings _weight((10, 3), 0).
    Each step's statistics count only the sequences that are real at that step, and the
    pooling after it still averages the real steps only."""
    output, new_state = train_masked(tmp_path, [
        {"time_distributed": {"batch_normalization": {"momentum": 0.5}}},
        "global_average_pooling1d"])
    np.testing.assert_allclose(output, [
        [-0.323009, -0.530046, -0.756297], [0.749134, 0.789175, 0.544632],
        [-0.426124, -0.259129, 0.211665]], atol=2e-6)
    moving = new_state["time_distributed"]
    np.testing.assert_allclose(moving["moving_mean"], [-0.075979, -0.106288, -0.122211],
                               atol=2e-6)
    np.testing.assert_allclose(moving["moving_variance"], [0.040893, 0.061768, 0.096759],
                               atol=2e-6)


@pytest.mark.parametrize(("layer", "message"), [
    ({"time_distributed": {"dense": {"unit": 4}}},
     "time_distributed.dense.unit: unknown key 'unit'; did you mean 'units'?"),
    ({"time_distributed": {"dense": {"units": 4, "name": "per_step"}}},
     "name of the wrapped layer: give it to time_distributed itself"),
    ({"time_distributed": {"conv2d": {"filters": 4, "kernel_size": 3}}},
     "the wrapped conv2d, given each step of shape (4,): conv2d takes"),
    ({"time_distributed": {"embedding": {"input_dim": 5, "output_dim": 2,
                                         "mask_zero": True}}},
     "embedding makes a mask over steps, which time_distributed cannot pass on"),
    ({"time_distributed": {"my_layers:Gate": {}}},
     "time_distributed wraps nntrain's own layers, not a custom one (my_layers:Gate)"),
])
def test_bad_wrapped_layers_are_refused_with_the_fix(tmp_path, layer, message):
    config = {"name": "td", "data": {"dataset": "synthetic"},
              "model": {"input": [3, 4], "layers": [layer, "flatten", {"dense": 1}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_flat_input_is_refused(tmp_path):
    config = {"name": "td", "data": {"dataset": "synthetic"},
              "model": {"input": [4], "layers": [{"time_distributed": {"dense": 2}}]},
              "compile": {"loss": "mse", "optimizer": "adam"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("validate", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2
    assert "it takes sequences, (steps, ...); got (4,)" in result.output


def test_a_clip_classifier_trains_and_predicts_from_the_cli(tmp_path):
    """Clips of 4 frames: a conv2d and pooling per frame, an lstm over the frames. The label
    is whether the bright square moves right or left."""
    rng = np.random.default_rng(0)
    n = 256
    clips = np.zeros((n, 4, 6, 6, 1), np.float32)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        row, start = rng.integers(0, 5), rng.integers(1, 3)
        for t in range(4):
            col = start + t if labels[i] else start + 3 - t
            clips[i, t, row:row + 2, col - 1:col + 1, 0] = 1.0
    np.savez(tmp_path / "clips.npz", x=clips, y=labels)
    config = {"name": "clips", "seed": 1,
              "data": {"train": "clips.npz", "validation": {"last": 64}},
              "model": {"input": [4, 6, 6, 1], "layers": [
                  {"time_distributed": {"conv2d": {"filters": 4, "kernel_size": 3,
                                                   "activation": "relu"}}},
                  {"time_distributed": "flatten"},
                  {"lstm": 8},
                  {"dense": {"units": 2, "activation": "softmax"}}]},
              "compile": {"loss": "sparse_categorical_crossentropy", "optimizer": {"adam": 0.01},
                          "metrics": ["accuracy"]},
              "fit": {"epochs": 12, "batch_size": 32}}
    (tmp_path / "clips.yaml").write_text(yaml.safe_dump(config))
    summary = nntrain("summary", str(tmp_path / "clips.yaml"))
    assert summary.exit_code == 0, summary.output
    # the wrapper holds the wrapped layer's weights (conv2d's 3*3*1*4 + 4) and shapes have
    # the steps: as Keras prints them
    assert "time_distributed (TimeDistributed)   │ (None, 4, 4, 4, 4) │      40" \
        in summary.output
    assert "time_distributed_1 (TimeDistributed) │ (None, 4, 64)" in summary.output
    assert "Total params: 2,394" in summary.output
    runs = tmp_path / "runs"
    result = nntrain("fit", str(tmp_path / "clips.yaml"), "-q", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    (run,) = (runs / "clips").iterdir()
    with (run / "history.csv").open() as f:
        accuracy = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    assert max(accuracy) > 0.9
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    predicted = nntrain("predict", str(run), str(tmp_path / "clips.npz"),
                        "--output", str(tmp_path / "p.csv"))
    assert predicted.exit_code == 0, predicted.output
    with (tmp_path / "p.csv").open() as f:
        classes = [int(row["class"]) for row in csv.DictReader(f)]
    assert np.mean(np.array(classes) == labels) > 0.9
    np.savez(tmp_path / "named.npz", frames=clips, y=labels)
    unnamed = nntrain("predict", str(run), str(tmp_path / "named.npz"))
    assert unnamed.exit_code == 2
    assert "no arrays for inputs input (found frames, y)" in unnamed.output
    assert "numpy.savez(FILE, input=...)" in unnamed.output


def test_the_editor_schema_takes_the_short_and_long_forms(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads(nntrain("schema").stdout))
    config = {"name": "td", "data": {"dataset": "synthetic"},
              "model": {"input": [3, 4], "layers": []},
              "compile": {"loss": "mse", "optimizer": "adam"}}

    def errors(layer):
        config["model"]["layers"] = [layer]
        return list(validator.iter_errors(config))

    for good in ({"time_distributed": "flatten"}, {"time_distributed": {"dense": 4}},
                 {"time_distributed": {"dense": {"units": 4}, "name": "per_step"}},
                 {"time_distributed": {"layer": {"dense": 4}}}):
        assert not errors(good), good
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        assert nntrain("validate", str(tmp_path / "c.yaml")).exit_code == 0, good
    assert errors({"time_distributed": {"layer": {"dense": {"units": 4, "colour": 1}}}})


def test_a_wrapped_normalization_adapts_to_every_step(tmp_path):
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    config = {"name": "td", "data": {"dataset": "synthetic"},
              "model": {"input": [3, 2], "layers": [
                  {"time_distributed": "normalization"}, "flatten", {"dense": 1}]},
              "compile": {"loss": "mse"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    model = prepare(load_config(tmp_path / "c.yaml")).model
    params, state = model.init(jax.random.key(0))
    x = np.random.default_rng(0).normal([5.0, -2.0], [3.0, 0.5], (64, 3, 2)).astype(np.float32)
    state = model.adapt(params, state, {"input": x})
    np.testing.assert_allclose(state["time_distributed"]["mean"].reshape(-1),
                               x.reshape(-1, 2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(state["time_distributed"]["variance"].reshape(-1),
                               x.reshape(-1, 2).var(0), rtol=1e-4)


def test_ids_past_a_wrapped_embeddings_table_are_a_data_error(tmp_path):
    np.savez(tmp_path / "ids.npz", x=np.arange(24).reshape(4, 2, 3) % 10, y=np.zeros(4))
    config = {"name": "td", "data": {"train": "ids.npz"},
              "model": {"input": [2, 3], "layers": [
                  {"time_distributed": {"embedding": {"input_dim": 5, "output_dim": 2}}},
                  "flatten", {"dense": 1}]},
              "compile": {"loss": "mse"}, "fit": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", str(tmp_path / "c.yaml"), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2, result.output
    assert "input 'input' holds indices 0..9, but the embedding 'time_distributed' has " \
        "input_dim 5" in " ".join(result.output.split())
