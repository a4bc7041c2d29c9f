"""Loading configs: validation, error locations and suggestions, overrides, unsafe YAML, and the
graph checks that `validate` and `train` run before compiling anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from nntrain.build import prepare
from nntrain.commands import dump_config
from nntrain.config.entries import entry_args, entry_name
from nntrain.config.loader import ConfigError, Issue, load_config
from nntrain.errors import UserError
from nntrain.graph import build_graph

VALID = """\
name: fashion_mlp
seed: 42
data:
  dataset: synthetic
  validation: {fraction: 0.2}
model:
  input: [28, 28]
  layers:
    - rescaling: 1/255
    - flatten
    - dense: {units: 300, activation: relu}
    - dense: {units: 100, activation: relu}
    - dense: {units: 10, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: {sgd: {learning_rate: 0.01}}
  metrics: [accuracy]
fit:
  epochs: 30
  batch_size: 32
  callbacks:
    - early_stopping: {monitor: val_loss, patience: 10, restore_best_weights: true}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_issues(path: Path, overrides: tuple[str, ...] = ()) -> list[Issue]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.issues


def issue_at(issues: list[Issue], path: str) -> Issue:
    found = [i for i in issues if i.path == path]
    assert len(found) == 1, f"expected one issue at {path}, got {issues}"
    return found[0]


def position_of(text: str, token: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of `token` in `text`."""
    for line_no, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if token in line:
            return line_no, line.index(token) + 1
    raise AssertionError(f"{token!r} not in text")


# -- valid configs ---------------------------------------------------------------------------


def test_valid_config_loads_with_values_and_defaults(tmp_path):
    path = write(tmp_path, VALID)
    loaded = load_config(path)
    config = loaded.config
    assert config.name == "fashion_mlp"
    assert config.seed == 42
    assert config.model.input == [28, 28]
    assert [entry_name(e) for e in config.model.layers] == [
        "rescaling", "flatten", "dense", "dense", "dense"]
    assert entry_args(config.model.layers[2]).units == 300
    assert entry_args(config.model.layers[2]).activation == "relu"
    assert entry_name(entry_args(config.model.layers[4]).kernel_initializer) == "glorot_uniform"
    assert entry_name(config.compile.optimizer) == "sgd"
    assert entry_args(config.compile.optimizer).learning_rate == 0.01
    assert entry_args(config.compile.optimizer).momentum == 0.0
    assert config.fit.epochs == 30
    assert config.fit.batch_size == 32
    assert config.fit.shuffle is True
    stopper = entry_args(config.fit.callbacks[0])
    assert (stopper.monitor, stopper.patience, stopper.restore_best_weights) == (
        "val_loss", 10, True)
    # positions point into the file
    assert loaded.where(("fit", "epochs")) == f"{path}:19:11"


def test_defaults_for_omitted_sections(tmp_path):
    path = write(tmp_path, """\
        name: tiny
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [dense: 3]
        compile: {loss: mse}
        """)
    config = load_config(path).config
    assert config.seed == 0
    assert (config.fit.epochs, config.fit.batch_size) == (1, 32)
    assert entry_name(config.compile.optimizer) == "rmsprop"
    assert entry_args(config.compile.optimizer).learning_rate == 0.001
    assert entry_args(config.compile.optimizer).epsilon == 1e-7  # Keras's, not optax's
    assert config.compile.metrics == []


# -- typos and wrong types -------------------------------------------------------------------

LAYER_TYPOS = """\
name: typos
data: {dataset: synthetic}
model:
  input: [28, 28]
  layers:
    - LAYER
    - dense: {DENSE_ARGS}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: OPTIMIZER
fit:
  FIT_KEY: 3
"""


@pytest.mark.parametrize(
    ("replace", "wrong", "path", "token", "suggestion"),
    [
        ("DENSE_ARGS", "unit: 10", "model.layers[1].dense.unit", "unit", "units"),
        ("FIT_KEY", "epoch", "fit.epoch", "epoch", "epochs"),
        ("LAYER", "flaten", "model.layers[0]", "flaten", "flatten"),
        ("OPTIMIZER", "sgdd", "compile.optimizer", "sgdd", "sgd"),
        ("DENSE_ARGS", "units: 10, activation: rellu", "model.layers[1].dense.activation",
         "rellu", "relu"),
    ],
)
def test_typo_reports_location_path_and_suggestion(tmp_path, replace, wrong, path, token,
                                                   suggestion):
    fixes = {"LAYER": "flatten", "DENSE_ARGS": "units: 10", "OPTIMIZER": "sgd",
             "FIT_KEY": "epochs"}
    fixes[replace] = wrong
    text = LAYER_TYPOS
    for key, value in fixes.items():
        text = text.replace(key, value)
    source = write(tmp_path, text)
    issues = config_issues(source)
    issue = issue_at(issues, path)
    line, col = position_of(text, token)
    assert issue.where == f"{source}:{line}:{col}"
    assert issue.suggestion == suggestion
    assert f"did you mean '{suggestion}'?" in str(issue)
    assert str(issue).startswith(f"{source}:{line}:{col}: {path}: ")


def test_wrong_type_is_reported_with_the_value(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: ten}
        compile: {loss: mse}
        """
    source = write(tmp_path, text)
    issues = config_issues(source)
    assert len(issues) == 1
    issue = issues[0]
    assert issue.path == "model.layers[0].dense.units"
    assert issue.where == f"{source}:6:22"
    assert "integer" in issue.message
    assert "'ten'" in issue.message


def test_all_problems_are_reported_at_once_in_file_order(tmp_path):
    text = """\
        name: typos
        data:
          dataset: synthetic
        model:
          input: [28, 28]
          layers:
            - flaten
            - dense: {unit: 10, activation: rellu}
            - dense: {units: ten}
            - dropout: 1.5
        compile:
          loss: sparse_categorical_crossentropy
          optimizer: sgdd
        fit:
          epoch: 3
        """
    source = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(source)
    issues = info.value.issues
    assert [(i.where.removeprefix(f"{source}:"), i.path, i.suggestion) for i in issues] == [
        ("7:7", "model.layers[0]", "flatten"),
        ("8:15", "model.layers[1].dense.unit", "units"),
        ("8:37", "model.layers[1].dense.activation", "relu"),
        ("9:22", "model.layers[2].dense.units", None),
        ("10:16", "model.layers[3].dropout.rate", None),
        ("13:14", "compile.optimizer", "sgd"),
        ("15:3", "fit.epoch", "epochs"),
    ]
    assert "invalid config (7 problems)" in str(info.value)
    assert isinstance(info.value, UserError)


def test_missing_required_key(tmp_path):
    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic}
        compile: {loss: mse}
        """)
    issues = config_issues(source)
    assert len(issues) == 1
    assert issues[0].message == "missing required key 'model'"
    assert issues[0].where == f"{source}:1:1"


# -- --set overrides ---------------------------------------------------------------------------

BASE = """\
name: t
data: {dataset: synthetic}
model:
  input: [4]
  layers:
    - dense: {units: 8, activation: relu}
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
"""


def test_set_overrides_scalars_and_list_items(tmp_path):
    source = write(tmp_path, BASE)
    loaded = load_config(source, ["fit.epochs=5", "model.layers.1.dense.units=64",
                                  "compile.optimizer={adam: {learning_rate: 0.002}}"])
    config = loaded.config
    assert config.fit.epochs == 5
    assert entry_args(config.model.layers[1]).units == 64
    assert entry_args(config.model.layers[1]).activation == "softmax"  # the rest is kept
    assert entry_args(config.model.layers[0]).units == 8
    assert entry_name(config.compile.optimizer) == "adam"
    assert entry_args(config.compile.optimizer).learning_rate == 0.002
    assert loaded.where(("fit", "epochs")) == "--set fit.epochs=5"


def test_set_reaches_into_entries_written_short(tmp_path):
    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [rescaling: 1/10, flatten, dense: 32, dropout: 0.2, dense: 3]
        compile: {loss: mse, optimizer: {sgd: 0.1}}
        """)
    loaded = load_config(source, ["model.layers.2.dense.activation=relu",
                                  "model.layers.1.flatten.name=flat",
                                  "model.layers.3.dropout.rate=0.3",
                                  "compile.optimizer.sgd.momentum=0.9"])
    layers = loaded.config.model.layers
    assert (entry_args(layers[2]).units, entry_args(layers[2]).activation) == (32, "relu")
    assert entry_args(layers[1]).name == "flat"
    assert entry_args(layers[3]).rate == 0.3
    assert entry_args(layers[0]).scale == 0.1
    optimizer = entry_args(loaded.config.compile.optimizer)
    assert (optimizer.learning_rate, optimizer.momentum) == (0.1, 0.9)


def test_set_takes_list_indices_as_error_messages_write_them(tmp_path):
    source = write(tmp_path, BASE)
    loaded = load_config(source, ["model.layers[1].dense.units=64",
                                  "model.layers[-2].dense.units=9"])
    assert entry_args(loaded.config.model.layers[1]).units == 64
    assert entry_args(loaded.config.model.layers[0]).units == 9


def test_set_bad_value_is_reported_at_the_override(tmp_path):
    source = write(tmp_path, BASE)
    issues = config_issues(source, ("fit.epochs=five", "model.layers.0.dense.units=-3"))
    assert {(i.where, i.path) for i in issues} == {
        ("--set fit.epochs=five", "fit.epochs"),
        ("--set model.layers.0.dense.units=-3", "model.layers[0].dense.units"),
    }


def test_set_bad_value_through_a_negative_index_is_reported_at_the_override(tmp_path):
    source = write(tmp_path, BASE)
    loaded = load_config(source, ["model.layers.-1.dense.units=64"])
    assert entry_args(loaded.config.model.layers[1]).units == 64  # the value itself lands
    issues = config_issues(source, ("model.layers.-1.dense.units=ten",))
    assert [(i.where, i.path) for i in issues] == [
        ("--set model.layers.-1.dense.units=ten", "model.layers[1].dense.units")]


@pytest.mark.parametrize("assignment", ["fit.epochs", "model.layers.7.dense.units=3", "=3"])
def test_set_malformed_or_out_of_range(tmp_path, assignment):
    source = write(tmp_path, BASE)
    with pytest.raises(UserError, match="--set"):
        load_config(source, [assignment])


# -- positional shorthand ------------------------------------------------------------------------


def test_positional_shorthand(tmp_path):
    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [28, 28]
          layers:
            - rescaling: 1/255
            - flatten
            - dense: 10
            - dropout: 0.2
            - reshape: [2, 5]
        compile:
          loss: {huber: 2.5}
          optimizer: {sgd: 0.05}
          metrics: [{top_k_categorical_accuracy: 3}]
        """)
    config = load_config(source).config
    layers = [entry_args(e) for e in config.model.layers]
    assert layers[0].scale == 1 / 255
    assert isinstance(layers[0].scale, float)
    assert layers[0].offset == 0.0
    assert layers[2].units == 10
    assert layers[3].rate == 0.2
    assert layers[4].target_shape == [2, 5]
    assert entry_args(config.compile.loss).delta == 2.5
    assert entry_args(config.compile.optimizer).learning_rate == 0.05
    assert entry_args(config.compile.metrics[0]).k == 3


def test_bad_fraction_is_reported(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [rescaling: 1/0]
        compile: {loss: mse}
        """
    source = write(tmp_path, text)
    issues = config_issues(source)
    assert [i.path for i in issues] == ["model.layers[0].rescaling.scale"]
    assert "'1/0'" in issues[0].message


def test_a_run_config_saved_with_every_data_setting_still_loads(tmp_path):
    # runs saved before the saved config left out what the data source ignores
    text = """\
        name: t
        data: {dataset: iris, x: x, y: y,
               synthetic: {samples: 256, test_samples: 64, classes: 3, integer_inputs: false}}
        model: {input: [4], layers: [dense: 3]}
        compile: {loss: sparse_categorical_crossentropy}
        """
    assert load_config(write(tmp_path, text)).config.data.dataset == "iris"


def test_saved_config_leaves_out_settings_the_data_source_ignores():
    root = Path(__file__).resolve().parents[1]
    fashion = yaml.safe_load(dump_config(load_config(root / "configs" / "fashion_mlp.yaml")))
    assert fashion["data"]["dataset"] == "fashion_mnist"
    assert not {"synthetic", "x", "y"} & fashion["data"].keys()
    tiny = yaml.safe_load(dump_config(load_config(root / "tests" / "configs" / "tiny_mlp.yaml")))
    assert tiny["data"]["synthetic"]["samples"] == 600


CLASSIFIER = """\
name: t
data: {dataset: synthetic}
model: {input: [4], layers: [dense: {units: 3, activation: softmax}]}
compile:
  loss: sparse_categorical_crossentropy
"""


def test_repeated_and_weighted_metric_names_follow_keras(tmp_path):
    text = CLASSIFIER + "  metrics: [accuracy, accuracy]\n" \
        "  weighted_metrics: [accuracy, accuracy, mse]\n"
    setup = prepare(load_config(write(tmp_path, text)))
    assert setup.log_names() == ["loss", "accuracy", "accuracy_1", "weighted_accuracy",
                                 "weighted_accuracy_1", "mse"]
    assert [m.weighted for m in setup.metrics["dense"]] == [False, False, True, True, True]


def test_weighted_metric_arguments_are_checked_where_written(tmp_path):
    text = CLASSIFIER + "  weighted_metrics: [{precision: {class_id: 3}}]\n"
    with pytest.raises(ConfigError) as info:
        prepare(load_config(write(tmp_path, text)))
    (issue,) = info.value.issues
    assert issue.path == "compile.weighted_metrics[0].precision.class_id"
    assert "past the output's 3 units" in issue.message


@pytest.mark.parametrize(("assignment", "path", "message"), [
    ("fit.steps_per_execution=0", "fit.steps_per_execution",
     "input should be greater than 0; or expected one of 'auto', found 0"),
    ("data.device_memory=12XB", "data.device_memory",
     "expected a size such as 512MB or 1.5GiB, found '12XB'"),
    ("name=a b", "name", "expected a name of letters, digits"),
    ("model.layers.0={my_layers:Gated: 8}", "model.layers[0].my_layers:Gated",
     "expected its arguments as a mapping"),
])
def test_a_value_that_fits_no_form_is_one_problem_in_words(tmp_path, assignment, path,
                                                            message):
    (issue,) = config_issues(write(tmp_path, BASE), (assignment,))
    assert issue.path == path and message in issue.message
    assert "constrained" not in issue.message and "^" not in issue.message


def test_set_with_broken_yaml_says_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path, BASE), ("compile.metrics=[accuracy",))
    assert info.value.message == "--set compile.metrics=[accuracy: value is not valid YAML: " \
        "expected ',' or ']', but got '<stream end>'"


# -- unsafe or malformed YAML ----------------------------------------------------------------


def test_python_tags_are_rejected_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    source = write(tmp_path, f"""\
        name: !!python/object/apply:os.system ["touch {marker}"]
        data: {{dataset: synthetic}}
        """)
    with pytest.raises(UserError) as info:
        load_config(source)
    assert not isinstance(info.value, ConfigError)
    assert f"{source}:1:7" in str(info.value)
    assert "python/object/apply" in str(info.value)
    assert not marker.exists()


def test_billion_laughs_is_rejected_quickly(tmp_path):
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    source = write(tmp_path, "\n".join(lines) + "\n")  # 9**9 = 387 million strings
    start = time.perf_counter()
    with pytest.raises(UserError, match="more than 100,000 values"):
        load_config(source)
    assert time.perf_counter() - start < 2.0


def test_deep_nesting_is_refused_cleanly(tmp_path):
    source = write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UserError, match="nested too deeply to be a config"):
        load_config(source)


@pytest.mark.parametrize(("value", "message"), [
    ("[&a [l, l, l, l, l, l, l, l, l], " + ", ".join(  # 9**8 = 43 million strings
        f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]"
        for prev, cur in zip("abcdefg", "bcdefgh", strict=True)) + "]",
     "expands to more than 100,000 values"),
    ("&r [*r]", "makes it endless"),
    ("[" * 5000 + "]" * 5000, "nested too deeply to be a config value"),
])
def test_a_set_value_is_held_to_the_config_files_limits(tmp_path, value, message):
    """A --set value is YAML as a config file is, with the same guards against alias bombs,
    endless aliases and deep nesting: refused at once, naming the --set."""
    source = write(tmp_path, BASE)
    start = time.perf_counter()
    with pytest.raises(UserError, match=message) as info:
        load_config(source, [f"compile.metrics={value}"])
    assert time.perf_counter() - start < 2.0
    assert info.value.message.startswith("--set compile.metrics=")


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path):
    source = write(tmp_path, BASE + "fit: {epochs: 3}\ncompile: {loss: mse}\n")
    with pytest.raises(UserError) as info:
        load_config(source)
    lines = BASE.count("\n")
    first = BASE.splitlines().index("compile:") + 1
    assert info.value.message == f"{source}:{lines + 2}:1: 'compile' is given twice in the " \
        f"same mapping (first at line {first})"
    assert "merge the two" in info.value.hint


def test_infinite_and_nan_numbers_are_refused(tmp_path):
    source = write(tmp_path, BASE)
    issues = config_issues(source, ("compile.optimizer.sgd.learning_rate=.inf",))
    assert "finite number" in issue_at(issues, "compile.optimizer.sgd.learning_rate").message
    issues = config_issues(source, ("fit.callbacks=[early_stopping: {baseline: .nan}]",))
    assert "finite number" in issue_at(issues, "fit.callbacks[0].early_stopping.baseline").message


def test_yaml_1_1_base_60_numbers_and_dates_stay_text(tmp_path):
    """PyYAML reads `5:00` as 300 (YAML 1.1's base 60); a config refuses it as a number, in
    the file and in --set alike."""
    source = write(tmp_path, BASE + "fit: {epochs: 5:00}\n")
    issues = config_issues(source)
    assert "found '5:00'" in issue_at(issues, "fit.epochs").message
    issues = config_issues(write(tmp_path, BASE), ("fit.epochs=1:30",))
    assert "found '1:30'" in issue_at(issues, "fit.epochs").message
    issues = config_issues(write(tmp_path, BASE + "seed: 2001-01-01\n"))
    assert "found '2001-01-01'" in issue_at(issues, "seed").message  # not datetime.date(...)
    config = load_config(write(tmp_path, BASE + "fit: {epochs: 1_000, batch_size: 0x10}\n"))
    assert (config.config.fit.epochs, config.config.fit.batch_size) == (1000, 16)


def test_a_config_past_a_mebibyte_is_refused_without_reading_it_all(tmp_path):
    source = tmp_path / "huge.yaml"
    source.write_text(BASE + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(UserError, match="huge.yaml is over 1 MiB, too big for a config"):
        load_config(source)
    with pytest.raises(UserError, match="/dev/zero is a device or a socket, not a config"):
        load_config(Path("/dev/zero"))  # by its kind, before a byte is read


def test_repeat_makes_at_most_a_thousand_copies(tmp_path):
    source = write(tmp_path, BASE)
    issues = config_issues(source, ("model.layers.0.repeat=1000000",))
    assert "expected a number of copies, 0 to 1,000, found 1000000" in issue_at(
        issues, "model.layers[0].repeat").message


def test_small_aliases_are_fine(tmp_path):
    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic}
        model:
          input: &shape [4]
          layers: [dense: 4, reshape: *shape]
        compile: {loss: mse}
        """)
    config = load_config(source).config
    assert entry_args(config.model.layers[1]).target_shape == [4]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("# nothing but a comment\n", "empty"),
        ("- name\n- data\n", "a config is a mapping"),
        ("just a string\n", "a config is a mapping"),
        ("name: t\nmodel: [1, 2\n", "not valid YAML"),
    ],
)
def test_empty_non_mapping_and_broken_files(tmp_path, text, match):
    source = write(tmp_path, text)
    with pytest.raises(UserError, match=match):
        load_config(source)


def test_a_folder_or_a_binary_file_as_config(tmp_path):
    with pytest.raises(UserError, match="is a folder, not a config file"):
        load_config(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(UserError, match="is not a text file"):
        load_config(tmp_path / "bin.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


# -- graph checks ------------------------------------------------------------------------------


def graph_issues(tmp_path: Path, text: str, check=prepare) -> tuple[Path, list[Issue]]:
    source = write(tmp_path, text)
    loaded = load_config(source)
    with pytest.raises(ConfigError) as info:
        check(loaded)
    return source, info.value.issues


def test_unknown_node_in_inputs(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 8, name: hidden}
            - dense: {units: 3, inputs: hiden}
        compile: {loss: mse}
        """
    source, issues = graph_issues(tmp_path, text, build_graph)
    assert len(issues) == 1
    issue = issues[0]
    assert issue.path == "model.layers[1].dense.inputs"
    assert issue.where == f"{source}:7:33"
    assert "unknown node 'hiden'" in issue.message
    assert issue.suggestion == "hidden"


@pytest.mark.parametrize("layer", ["dense: {units: 3, inputs: []}",
                                   "concatenate: {inputs: []}"])
def test_an_empty_inputs_list_is_a_config_error(tmp_path, layer):
    text = f"""\
        name: t
        data: {{dataset: synthetic}}
        model:
          input: [4]
          layers:
            - dense: {{units: 8, name: hidden}}
            - {layer}
        compile: {{loss: mse}}
        """
    _, issues = graph_issues(tmp_path, text, build_graph)
    assert len(issues) == 1 and issues[0].path.endswith(".inputs")
    assert "is an empty list: name the node(s) it takes" in issues[0].message


def test_duplicate_names(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 8, name: a}
            - dense: {units: 8, name: b}
            - dense: {units: 3, name: a, inputs: b}
        compile: {loss: mse}
        """
    source, issues = graph_issues(tmp_path, text, build_graph)
    assert [(i.where, i.path, i.message) for i in issues] == [
        (f"{source}:8:7", "model.layers[2]", "duplicate node name 'a'")]


def test_duplicate_name_is_reported_once(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 8, name: a}
            - dense: {units: 3, name: a}
        compile: {loss: mse}
        """
    source, issues = graph_issues(tmp_path, text, build_graph)
    assert [(i.where, i.message) for i in issues] == [
        (f"{source}:7:7", "duplicate node name 'a'")]


def test_layer_named_like_the_input_is_a_duplicate(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [{dense: {units: 3, name: input}}]
        compile: {loss: mse}
        """
    _, issues = graph_issues(tmp_path, text, build_graph)
    assert any(i.message == "duplicate node name 'input'" for i in issues)


def test_unused_node(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 8, name: side}
            - dense: {units: 3, name: out, inputs: input}
        compile: {loss: mse}
        """
    source, issues = graph_issues(tmp_path, text, build_graph)
    assert len(issues) == 1
    assert issues[0].where == f"{source}:6:7"
    assert issues[0].path == "model.layers[0]"
    assert "'side' does not lead to any output" in issues[0].message


def test_cycle(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 3, name: a, inputs: b}
            - dense: {units: 3, name: b, inputs: a}
          outputs: [b]
        compile: {loss: mse}
        """
    _, issues = graph_issues(tmp_path, text, build_graph)
    assert len(issues) == 1
    assert "cycle" in issues[0].message


def test_loss_keyed_by_unknown_output(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers:
            - dense: {units: 8}
            - dense: {units: 3}
        compile:
          loss: {dens_1: mse}
        """
    source, issues = graph_issues(tmp_path, text)
    bad = issue_at(issues, "compile.loss.dens_1")
    line, col = position_of(text, "mse}")
    assert bad.where == f"{source}:{line}:{col}"
    assert "'dens_1' is not an output of the model (outputs: dense_1)" in bad.message
    assert bad.suggestion == "dense_1"
    assert any(i.message == "no loss for output 'dense_1'" for i in issues)


def test_monitor_typo_suggests_the_logged_name(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic, validation: {fraction: 0.2}}
        model:
          input: [4]
          layers: [{dense: {units: 3, activation: softmax}}]
        compile: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        fit:
          callbacks:
            - early_stopping: {monitor: val_acc}
        """
    source, issues = graph_issues(tmp_path, text)
    assert len(issues) == 1
    issue = issues[0]
    assert issue.path == "fit.callbacks[0].early_stopping.monitor"
    assert issue.where == f"{source}:9:33"
    assert issue.suggestion == "val_accuracy"
    assert "logged: loss, accuracy, val_loss, val_accuracy" in issue.message


def test_val_monitor_without_validation_data(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [{dense: {units: 3, activation: softmax}}]
        compile: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        fit:
          callbacks: [{model_checkpoint: {monitor: val_loss}}]
        """
    _, issues = graph_issues(tmp_path, text)
    assert len(issues) == 1
    assert "there is no validation data" in issues[0].message
    assert "add data.validation" in issues[0].message


def test_valid_monitors_pass(tmp_path):
    source = write(tmp_path, VALID)
    setup = prepare(load_config(source))
    assert setup.log_names() == ["loss", "accuracy"]


def test_automatic_names_follow_keras(tmp_path):
    text = """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4, 2]
          layers:
            - flatten
            - dense: 8
            - dense: {units: 8, name: dense_1}
            - dropout: 0.1
            - dense: 6
            - reshape: [3, 2]
            - flatten
            - dense: 2
        compile: {loss: mse}
        """
    graph = build_graph(load_config(write(tmp_path, text)))
    assert [n.name for n in graph.nodes] == [
        "flatten", "dense", "dense_1", "dropout", "dense_2", "reshape", "flatten_1", "dense_3"]
    assert graph.outputs == ("dense_3",)
    assert graph.is_chain
    assert graph.node("dense_2").inputs == ("dropout",)
    assert graph.node("flatten").inputs == ("input",)


def test_keras_arguments_that_live_elsewhere_say_where(tmp_path):
    source = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as info:
        load_config(source, ["fit.validation_split=0.1",
                             "fit.initial_epoch=3",
                             "compile.metrics=[acuracy]",
                             "model.input_shape=[4]"])
    text = str(info.value)
    assert "fit.validation_split: unknown key 'validation_split': Keras's validation_split " \
        "is data.validation here: {last: N} takes the last N rows, as Keras does" in text
    assert "model.input_shape: unknown key 'input_shape': the input's shape is model.input " \
        "here" in text
    assert "fit.initial_epoch: unknown key 'initial_epoch': continue a run with `nntrain " \
        "fit --resume RUN`" in text
    assert "did you mean 'validation_batch_size'" not in text
    # the list's one problem, not also the dict form's "input should be a valid dictionary"
    assert "unknown metric 'acuracy'; did you mean 'accuracy'?" in text
    assert "valid dictionary" not in text and len(info.value.issues) == 4


def test_an_empty_config_lists_the_keys_it_needs(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "name: x\n"))
    assert "missing required keys 'data', 'model' and 'compile'" in str(info.value)


@pytest.mark.parametrize("written", ["1/255", "1./255", "1.0 / 255.", "2/510", "0.5/127.5"])
def test_a_fraction_is_read_as_its_value(tmp_path, written):
    source = write(tmp_path, f"""\
        name: t
        data: {{dataset: synthetic}}
        model:
          input: [4]
          layers: [{{rescaling: '{written}'}}, {{dense: 2}}]
        compile: {{loss: mse}}
        """)
    (layer, _) = load_config(source).config.model.layers
    assert entry_args(layer).scale == 1 / 255


def test_keras_class_names_and_serialized_entries_are_read_as_nntrain_names(tmp_path):
    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic}
        model:
          input: [4]
          layers: [{Dense: {units: 8}}, {class_name: Dropout, config: {rate: 0.5}}, Flatten,
                   {type: Dense, units: 3}]
        compile:
          loss: {class_name: SparseCategoricalCrossentropy, config: {from_logits: true}}
          optimizer: {type: Adam, learning_rate: 0.01}
          metrics: [SparseCategoricalAccuracy, {class_name: SparseTopKCategoricalAccuracy}]
        fit:
          callbacks: [{EarlyStopping: {patience: 2}}]
        """)
    config = load_config(source).config
    assert [entry_name(e) for e in config.model.layers] == ["dense", "dropout", "flatten",
                                                             "dense"]
    assert entry_args(config.model.layers[3]).units == 3
    assert entry_args(config.model.layers[1]).rate == 0.5
    assert entry_name(config.compile.loss) == "sparse_categorical_crossentropy"
    assert entry_args(config.compile.loss).from_logits is True
    assert (entry_name(config.compile.optimizer),
            entry_args(config.compile.optimizer).learning_rate) == ("adam", 0.01)
    assert [entry_name(m) for m in config.compile.metrics] == [
        "sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy"]
    assert entry_args(config.fit.callbacks[0]).patience == 2


@pytest.mark.parametrize("optimizer", [
    # keras.saving.serialize_keras_object(keras.optimizers.AdamW()), Keras 3.15
    """{class_name: AdamW, module: keras.optimizers, registered_name: null,
        config: {amsgrad: false, beta_1: 0.9, beta_2: 0.999, clipnorm: null, clipvalue: null,
        ema_momentum: 0.99, ema_overwrite_frequency: null, epsilon: 1.0e-07,
        global_clipnorm: null, gradient_accumulation_steps: null,
        learning_rate: 0.0010000000474974513, loss_scale_factor: null, name: adam_w,
        use_ema: false, weight_decay: 0.004}}""",
    # ... of SGD(ExponentialDecay(0.01, 100, 0.9), momentum=0.9, weight_decay=0.001)
    """{class_name: SGD, module: keras.optimizers, registered_name: null,
        config: {clipnorm: null, clipvalue: null, ema_momentum: 0.99,
        ema_overwrite_frequency: null, global_clipnorm: null,
        gradient_accumulation_steps: null, loss_scale_factor: null, momentum: 0.9,
        name: sgd, nesterov: false, use_ema: false, weight_decay: 0.001,
        learning_rate: {class_name: ExponentialDecay, module: keras.optimizers.schedules,
          registered_name: null, config: {decay_rate: 0.9, decay_steps: 100,
          initial_learning_rate: 0.01, name: ExponentialDecay, staircase: false}}}}""",
    # the schedules' own serialized forms as an optimizer's learning rate
    """{adam: {learning_rate: {class_name: CosineDecay, module: keras.optimizers.schedules,
        registered_name: null, config: {alpha: 0.0, decay_steps: 1000,
        initial_learning_rate: 0.0, name: CosineDecay, warmup_steps: 100,
        warmup_target: 0.01}}}}""",
    """{adam: {learning_rate: {class_name: PiecewiseConstantDecay,
        module: keras.optimizers.schedules, registered_name: null,
        config: {boundaries: [10, 20], name: PiecewiseConstant,
        values: [0.1, 0.01, 0.001]}}}}""",
], ids=["adamw", "sgd_exponential_decay", "cosine_decay", "piecewise_constant"])
def test_kerass_saved_optimizers_and_schedules_are_read(tmp_path, optimizer):
    from nntrain.config.compile import schedule_of

    source = write(tmp_path, f"""\
        name: t
        data: {{dataset: synthetic}}
        model: {{input: [4], layers: [{{dense: {{units: 3, activation: softmax}}}}]}}
        compile:
          loss: sparse_categorical_crossentropy
          optimizer: {optimizer}
        """)
    args = entry_args(load_config(source).config.compile.optimizer)
    schedule = schedule_of(args.learning_rate)
    if "AdamW" in optimizer:
        assert (args.weight_decay, args.amsgrad, schedule) == (0.004, False, None)
    elif "SGD" in optimizer:
        assert (args.weight_decay, args.momentum) == (0.001, 0.9)
        assert schedule[0] == "exponential_decay"
        assert (schedule[1].initial_learning_rate, schedule[1].decay_steps) == (0.01, 100)
    else:
        assert schedule[0] in ("cosine_decay", "piecewise_constant")


def test_kerass_saved_loss_and_metric_configs_are_read(tmp_path):
    """What keras.saving.serialize_keras_object writes for losses, metrics and optimizers
    (Keras 3.15): its fixed values are accepted, and a metric's `name` is the name it is
    logged under."""
    from nntrain.build import prepare

    source = write(tmp_path, """\
        name: t
        data: {dataset: synthetic, synthetic: {classes: 2}, validation: {last: 32}}
        model:
          input: [4]
          layers: [{dense: {units: 1, activation: sigmoid}}]
        compile:
          loss: {module: keras.losses, class_name: BinaryCrossentropy, registered_name: null,
                 config: {name: binary_crossentropy, reduction: sum_over_batch_size,
                 from_logits: false, label_smoothing: 0.0, axis: -1}}
          optimizer: {module: keras.optimizers, class_name: RMSprop, registered_name: null,
                      config: {name: rmsprop, learning_rate: 0.0010000000474974513,
                      weight_decay: null, clipnorm: null, global_clipnorm: null,
                      clipvalue: null, use_ema: false, ema_momentum: 0.99,
                      ema_overwrite_frequency: null, loss_scale_factor: null,
                      gradient_accumulation_steps: null, rho: 0.9, momentum: 0.0,
                      epsilon: 1.0e-07, centered: false}}
          metrics:
            - {class_name: AUC, config: {name: pr_auc, dtype: float32, num_thresholds: 200,
               curve: PR, summation_method: interpolation, multi_label: false,
               num_labels: null, label_weights: null, from_logits: false}}
            - {class_name: BinaryAccuracy, config: {name: binary_accuracy, dtype: float32,
               threshold: 0.5}}
        fit:
          callbacks: [{early_stopping: {monitor: val_pr_auc, mode: max}}]
        """)
    loaded = load_config(source)
    assert entry_name(loaded.config.compile.optimizer) == "RMSprop"  # an alias of rmsprop
    setup = prepare(loaded)
    assert setup.log_names() == ["loss", "pr_auc", "binary_accuracy"]
    with pytest.raises(ConfigError, match="reduction: expected one of 'sum_over_batch_size'"):
        load_config(source, ["compile.loss={binary_crossentropy: {reduction: sum}}"])


def test_threads_validating_at_once_share_each_entry_model():
    """Entry models are made on first use; threads that name one at the same moment must get
    the same model, or entries made by the others would fail to validate again."""
    code = """
import sys, threading
from nntrain.config.schema import ModelConfig
sys.setswitchinterval(1e-6)
go, made = threading.Barrier(8), []
def work():
    go.wait()
    made.append(ModelConfig(input=[4], layers=["flatten", {"dense": 3}, "my_layers:Scale"]))
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
for model in made:
    ModelConfig(input=[4], layers=model.layers)  # raises if an entry's model differs
print(len(made))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8"]
