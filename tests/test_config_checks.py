"""Configs whose parts do not fit together are refused by `validate` (and so by `fit`, before
a run directory exists), with the place and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from clirunner import nntrain

BASE = {"name": "checks", "data": {"dataset": "synthetic"},
        "model": {"input": [6], "layers": [{"dense": {"units": 3, "activation": "softmax"}}]},
        "compile": {"loss": "sparse_categorical_crossentropy"}}


def _with(**changes) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return config


TWO_OUTPUTS = {"input": [6], "layers": [
    {"dense": {"units": 2, "name": "a"}},
    {"dense": {"units": 2, "name": "b", "inputs": "input"}}]}
REFUSED = {
    "arguments beside the layer's name": (
        _with(model__layers=[{"dense": 3, "activation": "softmax"}]),
        "expected one layer name as the only key, found 2 keys (activation, dense): the "
        "arguments go inside the layer's mapping: {dense: {units: 3, activation: softmax}}"),
    "arguments beside the optimizer's name": (
        _with(compile__optimizer={"sgd": {"learning_rate": 0.1}, "momentum": 0.9}),
        "the arguments go inside the optimizer's mapping: {sgd: {learning_rate: 0.1, "
        "momentum: 0.9}}"),
    "negative reshape size": (
        _with(model__layers=[{"reshape": [-1, -3]}, "flatten", {"dense": 3}]),
        "model.layers[0].reshape.target_shape[1]: input should be greater than or equal "
        "to -1"),
    "two -1 in reshape": (
        _with(model__layers=[{"reshape": [-1, -1]}, "flatten", {"dense": 3}]),
        "at most one -1 (the size the others leave) in target_shape"),
    "orthogonal moving mean": (
        _with(model__layers=[{"batch_normalization": {
            "moving_mean_initializer": "orthogonal"}}, {"dense": 3}]),
        "weight 'moving_mean' of shape (6,): the orthogonal initializer needs 2 or more "
        "dimensions"),
    "mask over a grid": (
        _with(model__input=None, model__inputs={"ids": {"shape": [3, 6], "dtype": "int32"}},
              model__layers=[{"embedding": {"input_dim": 10, "output_dim": 4,
                                            "mask_zero": True}}, {"dense": 3}]),
        "a mask over padded steps needs one axis of steps; mask_zero on embedding "
        "'embedding' would mask a 2-axis grid (3, 6)"),
    "an output listed twice": (
        _with(model={**TWO_OUTPUTS, "outputs": ["a", "a", "b"]},
              compile__loss={"a": "mse", "b": "mse"}),
        "model.outputs[1]: output 'a' is listed twice (its loss would count twice)"),
    "an output named like validation figures": (
        _with(model={**TWO_OUTPUTS, "layers": [
            {"dense": {"units": 2, "name": "val"}},
            {"dense": {"units": 2, "name": "b", "inputs": "input"}}], "outputs": ["val", "b"]},
            compile__loss={"val": "mse", "b": "mse"}),
        "output 'val': its figures (val_loss) would be taken for validation figures"),
    "a softmax over one unit": (
        _with(model__layers=[{"dense": {"units": 1, "activation": "softmax"}}],
              compile__loss="binary_crossentropy"),
        "model.layers[0]: output 'dense' is a softmax over one unit, which is always 1, so it "
        "can learn nothing: for a yes/no output use activation: sigmoid"),
    "a data.outputs key that is no output": (
        _with(model={**TWO_OUTPUTS, "outputs": ["a", "b"]}, compile__loss="mse",
              data={"dataset": "california_housing", "targets": "median_house_value",
                    "outputs": {"a": "median_house_value", "B": "median_income"}}),
        "data.outputs.B: 'B' is not an output of the model (outputs: a, b); did you mean "
        "'b'?"),
    "a data.inputs key that is no input": (
        _with(model={"inputs": {"wide": {"shape": [2]}, "deep": {"shape": [2]}},
                     "layers": [{"concatenate": {"inputs": ["wide", "deep"]}}, {"dense": 1}]},
              compile__loss="mse",
              data={"dataset": "california_housing",
                    "inputs": {"wide": "0:2", "Deep": "2:4"}}),
        "data.inputs.Deep: 'Deep' is not an input of the model (inputs: deep, wide); did you "
        "mean 'deep'?"),
    "table keys for arrays": (
        _with(data={"dataset": "synthetic", "features": "0:3"}),
        "data: features: for tables only (.csv files, the california_housing, iris, xor "
        "datasets)"),
    "a class metric for every output, one of them learning values": (
        _with(model={**TWO_OUTPUTS, "outputs": ["a", "b"]},
              compile__loss={"a": "sparse_categorical_crossentropy", "b": "mse"},
              compile__metrics=["accuracy"]),
        "compile.metrics[0]: accuracy would apply to every output, and 'b' learns values, not "
        "classes: give each output its metrics, e.g. {a: [accuracy], b: [mae]}"),
    "a metric named like another figure": (
        _with(compile__metrics=[{"accuracy": {"name": "val_accuracy"}}]),
        "compile.metrics[0].accuracy.name: 'val_accuracy' is a name the logs use for another "
        "figure"),
    "accuracy of a logit at 0.5": (
        _with(model__layers=[{"dense": 1}],
              compile__loss={"binary_crossentropy": {"from_logits": True}},
              compile__metrics=["accuracy", {"recall": {"thresholds": 0}}]),
        "compile.metrics[0].accuracy: the output gives logits (its loss has from_logits: "
        "true), but accuracy reads its values as probabilities: it counts a value above 0.5 "
        "as positive, and a logit of 0.5 is a probability of 0.62 (Keras does the same, "
        "silently); give binary_accuracy: {threshold: 0}"),
    "auc of logits": (
        _with(model__layers=[{"dense": 1}],
              compile__loss={"binary_crossentropy": {"from_logits": True}},
              compile__metrics=["auc"]),
        "compile.metrics[0].auc: the output gives logits (its loss has from_logits: true), "
        "but auc reads its values as probabilities: its thresholds span 0..1"),
    "weights past the machine's memory": (  # 6 TB: no test machine holds them
        _with(model__layers=[{"dense": 100_000_000_000}, {"dense": 3}]),
        "model.layers[0]: the model has 1,000,000,000,003 weights; with their gradients and "
        "rmsprop state (1 more of each) training holds 11,175.9 GiB in float32, more than this "
        "machine's"),
    "table keys for a file of another kind": (
        _with(data={"train": "t.csv.gz", "targets": "y"}),
        "data: train: t.csv.gz is not a file nntrain reads (a .csv table, an .npz of arrays, "
        "or a folder of .npy files)"),
    "negative variance": (
        _with(model__layers=[{"normalization": {"mean": 0.5, "variance": -1}}, {"dense": 3}]),
        "a variance is never negative"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_configs_that_do_not_fit_together_are_refused(tmp_path: Path, case: str):
    config, message = REFUSED[case]
    config["model"] = {k: v for k, v in config["model"].items() if v is not None}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    for command in ("validate", "fit"):
        result = nntrain(command, "c.yaml", cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_set_on_a_yaml_alias_changes_that_place_only(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(
        "name: anchors\ndata: {dataset: synthetic}\nmodel:\n  input: [6]\n  layers:\n"
        "    - dense: &hidden {units: 4}\n    - dense: *hidden\n    - dense: 3\n"
        "compile: {loss: mse}\n")
    result = nntrain("summary", "c.yaml", "--set", "model.layers.0.dense.units=8",
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "dense (Dense)   │ (None, 8)" in result.output
    assert "dense_1 (Dense) │ (None, 4)" in result.output


def test_several_target_columns_for_class_indices_are_refused(tmp_path: Path):
    rows = ["a,b,species,is_small"] + [f"{i % 7},{i % 5},{'xyz'[i % 3]},{i % 2}"
                                       for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = {"name": "columns", "data": {"train": "t.csv", "targets": ["species", "is_small"]},
              "model": {"input": [2], "layers": [{"dense": {"units": 3,
                                                            "activation": "softmax"}}]},
              "compile": {"loss": "sparse_categorical_crossentropy"}, "fit": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", "c.yaml", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "data.targets gives output 'dense' 2 columns (species, is_small), and its loss " \
        "takes one column of class indices" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("assignment", "suggestion"), [
    ("compile.optimizer={adam: {lr: 0.1}}", "unknown key 'lr'; did you mean 'learning_rate'?"),
    ("model.layers.0.dense.activation=Relu", "found 'Relu'; did you mean 'relu'?"),
    # Keras 1's names, from older books
    ("model.layers.0.dense.output_dim=3", "unknown key 'output_dim'; did you mean 'units'?"),
    ("fit.nb_epoch=3", "unknown key 'nb_epoch'; did you mean 'epochs'?"),
    ("model.layers.0.dense.W_regularizer=l2",
     "unknown key 'W_regularizer'; did you mean 'kernel_regularizer'?"),
])
def test_suggestions_know_other_spellings(tmp_path: Path, assignment: str, suggestion: str):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(BASE))
    result = nntrain("validate", "c.yaml", "--set", assignment, cwd=tmp_path)
    assert result.exit_code == 2
    assert suggestion in " ".join(result.output.split())


def test_a_validation_split_that_takes_everything_says_how_much_is_left(tmp_path: Path):
    config = _with(data={"dataset": "synthetic", "synthetic": {"samples": 64},
                         "validation": {"last": 64}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", "c.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    assert "data.validation.last is 64, which leaves none of the 64 examples to train on" \
        in " ".join(result.output.split())
    assert "hint: hold out at most 63" in result.output


def test_a_runs_own_config_from_an_older_nntrain_is_read_back_as_it_was(tmp_path: Path):
    """Rules added since a run was trained do not lock it out of evaluate, predict or
    --resume: its saved config.yaml passes, the same file as a new config does not."""
    from nntrain.build import prepare
    from nntrain.config.loader import ConfigError, load_config

    older = _with(compile__loss={"sparse_categorical_crossentropy": {"from_logits": True}},
                  data={"dataset": "synthetic", "missing": "mean"},
                  fit={"callbacks": [{"csv_logger": "log.csv"}, {"csv_logger": "log.csv"}]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    prepare(load_config(tmp_path / "config.yaml", saved=True))
    with pytest.raises(ConfigError):
        prepare(load_config(tmp_path / "config.yaml"))


def test_a_saved_config_with_a_data_key_for_no_input_is_read_back(tmp_path: Path):
    """Before data.inputs keys were checked, a one-input model ignored one naming no input:
    its runs stay readable."""
    from nntrain.build import prepare
    from nntrain.config.loader import ConfigError, load_config

    older = _with(data={"dataset": "iris", "inputs": {"features": "0:4"}},
                  model={"input": [4], "layers": [{"dense": {"units": 3,
                                                              "activation": "softmax"}}]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    prepare(load_config(tmp_path / "config.yaml", saved=True))
    with pytest.raises(ConfigError, match="'features' is not an input of the model"):
        prepare(load_config(tmp_path / "config.yaml"))


def test_the_optimizer_state_counts_towards_the_memory_a_model_needs(tmp_path: Path):
    """Weights taking 30% of this machine's memory fit once, and with their gradients (SGD),
    but not with Adam's two moments as well (4 x 30%)."""
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    units = int(0.3 * memory / 4 / 10)  # 6 inputs, a bias and 3 outputs a unit
    config = _with(model__layers=[{"dense": units}, {"dense": 3}])
    for optimizer, refused in [("sgd", False), ({"sgd": {"momentum": 0.9}}, False),
                               ("adam", True)]:
        config["compile"]["optimizer"] = optimizer
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        result = nntrain("validate", str(tmp_path / "c.yaml"))
        assert result.exit_code == (2 if refused else 0), (optimizer, result.output)
    assert "with their gradients and adam state (2 more of each) training holds" in \
        " ".join(result.output.split())


def test_a_trained_run_is_read_back_where_its_weights_fit(tmp_path: Path, monkeypatch):
    """evaluate and predict hold the weights alone: a machine that could not train the model
    (gradients, Adam's moments) still reads its run back."""
    from nntrain import build

    tiny = Path(__file__).parent / "configs" / "tiny_mlp.yaml"  # 323 weights, adam
    assert nntrain("fit", str(tiny), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    (run,) = (tmp_path / "runs" / "tiny_mlp").iterdir()
    monkeypatch.setattr(build, "_memory_bytes", lambda: 2000)  # 1,292 B of weights fit
    evaluated = nntrain("evaluate", str(run), "--split", "validation", cwd=tmp_path)
    assert evaluated.exit_code == 0, evaluated.output
    refused = nntrain("validate", str(tiny), cwd=tmp_path)
    assert refused.exit_code == 2
    assert "with their gradients and adam state (2 more of each) training holds" in \
        " ".join(refused.output.split())
    monkeypatch.setattr(build, "_memory_bytes", lambda: 1000)
    evaluated = nntrain("evaluate", str(run), "--split", "validation", cwd=tmp_path)
    assert evaluated.exit_code == 2
    said = " ".join(evaluated.output.split())
    assert "the model has 323 weights; that is 0.0 GiB in float32, more than this machine's" \
        in said and "read the run back on a machine with more memory" in said
    assert "make it smaller" not in said


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(
        "name: loop\ndata: {dataset: synthetic}\n"
        "model: {input: [2], layers: &l [{dense: 2}, *l]}\ncompile: {loss: mse}\n")
    result = nntrain("validate", "c.yaml", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "a YAML alias (*name) stands inside the value its anchor (&name) names" \
        in " ".join(result.output.split())


def test_a_problem_in_a_repeated_layer_is_said_once(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(
        "name: rep\ndata: {dataset: synthetic}\nmodel:\n  input: [6]\n  layers:\n"
        "    - dense: {unit: 4}\n      repeat: 3\n    - dense: 3\ncompile: {loss: mse}\n")
    result = nntrain("validate", "c.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    assert "invalid config (1 problem)" in result.output
    assert "c.yaml:6:15: model.layers[0].dense.unit: unknown key 'unit'" in result.output


def test_a_yaml_boolean_for_a_number_is_refused_at_its_place(tmp_path: Path):
    """pydantic would read `units: yes` as 1 unit; a YAML yes/on/true is never a number."""
    (tmp_path / "c.yaml").write_text(
        "name: flags\ndata: {dataset: synthetic}\nmodel:\n  input: [6]\n  layers:\n"
        "    - dense: {units: yes, use_bias: no}\n    - dropout: on\n"
        "    - conv1d: {filters: 2, kernel_size: [true]}\n"
        "compile: {loss: mse, optimizer: {adam: {learning_rate: on}}}\n"
        "fit: {epochs: 2, shuffle: off}\n")
    result = nntrain("validate", "c.yaml", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    for where, path, found in [("6:22", "model.layers[0].dense.units", "True"),
                               ("7:16", "model.layers[1].dropout.rate", "True"),
                               ("8:41", "model.layers[2].conv1d.kernel_size", "[True]"),
                               ("9:56", "compile.optimizer.adam.learning_rate", "True")]:
        assert f"c.yaml:{where}: {path}: expected a number, found {found} (YAML reads yes, " \
            "no, on, off, true and false as booleans)" in said
    assert "4 problems" in said  # use_bias: no and shuffle: off are booleans where they belong

    result = nntrain("validate", "c.yaml", "--set", "model.layers.0.dense.units=8",
                     "--set", "model.layers.1.dropout=0.5", "--set",
                     "model.layers.2={dense: 2}", "--set", "fit.epochs=off",
                     "--set", "compile.optimizer.adam.learning_rate=0.01", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "--set fit.epochs=off: fit.epochs: expected a number, found False" \
        in " ".join(result.output.split())


def test_one_loss_applies_to_every_output(tmp_path: Path):
    config = _with(model={**TWO_OUTPUTS, "outputs": ["a", "b"]}, compile__loss="mse",
                   compile__metrics=["mae"], data={"dataset": "synthetic",
                                                  "synthetic": {"classes": 0}},
                   fit={"epochs": 1})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", "c.yaml", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "checks").iterdir()
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "a_loss", "b_loss", "a_mae", "b_mae"} <= set(header)


def test_older_runs_multi_output_configs_are_read_back_as_they_were(tmp_path: Path):
    """An older nntrain let a metrics list reach every output, and one_hot convert every
    output whatever its loss: its runs are read back so."""
    from nntrain.build import prepare
    from nntrain.config.loader import ConfigError, load_config

    older = _with(model={**TWO_OUTPUTS, "outputs": ["a", "b"]},
                  compile__loss={"a": "sparse_categorical_crossentropy", "b": "mse"},
                  compile__metrics=["accuracy"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(older))
    prepare(load_config(tmp_path / "config.yaml", saved=True))
    with pytest.raises(ConfigError):
        prepare(load_config(tmp_path / "config.yaml"))

    one_hot = _with(compile__loss="mse", data={"dataset": "synthetic", "one_hot": True})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(one_hot))
    setup = prepare(load_config(tmp_path / "config.yaml", saved=True))
    assert setup.io.one_hot_outputs == {"dense"}
