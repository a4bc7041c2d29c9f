"""Data sources end to end: YAML config -> prepare -> load_dataset (CSV tables, .npz files,
built-in datasets, splits, missing values, one-hot labels), and how sample and class weights
enter the loss (Keras semantics: they multiply)."""

from __future__ import annotations

import csv
import json
import re
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from clirunner import nntrain

from nntrain.build import class_weight_vector, prepare
from nntrain.config.loader import load_config
from nntrain.data.arrays import ArraySet
from nntrain.data.sources import load_dataset
from nntrain.errors import DataError
from nntrain.train.programs import Programs, class_indices, epoch_order, to_device

HOUSING_CSV = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "housing.csv"
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


# -- helpers ----------------------------------------------------------------------------------
def classifier(inputs: int, classes: int = 3, loss: str = "sparse_categorical_crossentropy"):
    return f"""
model:
  input: [{inputs}]
  layers:
    - dense: {{units: {classes}, activation: softmax}}
compile:
  loss: {loss}
"""


def regressor(inputs: int, units: int = 1) -> str:
    return f"""
model:
  input: [{inputs}]
  layers:
    - dense: {units}
compile:
  loss: mse
"""


def write_config(folder: Path, data: str, model: str, seed: int = 0, extra: str = "",
                 file: str = "config.yaml") -> Path:
    text = f"name: t\nseed: {seed}\ndata:\n{textwrap.indent(textwrap.dedent(data), '  ')}"
    path = folder / file
    path.write_text(text + textwrap.dedent(model) + textwrap.dedent(extra))
    return path


def load(folder: Path, data: str, model: str, seed: int = 0, extra: str = ""):
    """(dataset, setup) the way `nntrain fit` gets them."""
    loaded = load_config(write_config(folder, data, model, seed, extra))
    setup = prepare(loaded)
    return load_dataset(loaded.config.data, setup.io, folder, loaded.config.seed), setup


def data_error(folder: Path, data: str, model: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        load(folder, data, model, **kw)
    return str(info.value)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def x_of(part: ArraySet) -> np.ndarray:
    return next(iter(part.x.values()))


def y_of(part: ArraySet) -> np.ndarray:
    return next(iter(part.y.values()))


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """a, b, c (numbers), w (weights), y (labels 0-2)."""
    rows = [[i, 10 + i, 100 + i, 1 + i % 2, i % 3] for i in range(6)]
    return write_csv(tmp_path / "t.csv", ["a", "b", "c", "w", "y"], rows)


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    """50 rows: id 0..49 (the only feature) and label id % 3, to follow rows through splits."""
    return write_csv(tmp_path / "ids.csv", ["id", "label"], [[i, i % 3] for i in range(50)])


# -- CSV: columns -----------------------------------------------------------------------------
def test_named_features_and_target(tmp_path: Path, table: Path):
    ds, _ = load(tmp_path, "train: t.csv\nfeatures: [c, a]\ntargets: y\n", classifier(2))
    np.testing.assert_array_equal(x_of(ds.train), [[100 + i, i] for i in range(6)])
    assert x_of(ds.train).dtype == np.float32
    np.testing.assert_array_equal(y_of(ds.train), [0, 1, 2, 0, 1, 2])
    assert y_of(ds.train).dtype == np.int32  # class indices for sparse CE
    assert ds.train.sample_weight is None and ds.validation is None and ds.test is None


def test_default_features_are_all_but_targets_and_weights(tmp_path: Path, table: Path):
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n", classifier(3))
    np.testing.assert_array_equal(x_of(ds.train), [[i, 10 + i, 100 + i] for i in range(6)])
    np.testing.assert_array_equal(ds.train.sample_weight, [1, 2, 1, 2, 1, 2])
    assert ds.train.sample_weight.dtype == np.float32


@pytest.mark.parametrize(("spec", "expected"), [
    ('"1:3"', ["b", "c"]),
    ('":2"', ["a", "b"]),
    ('"-2:"', ["c", "w"]),
    ("[0, 2]", ["a", "c"]),
    ("[-1, a]", ["w", "a"]),
    ("b", ["b"]),
])
def test_features_by_range_index_list_or_name(tmp_path: Path, table: Path, spec, expected):
    ds, _ = load(tmp_path, f"train: t.csv\nfeatures: {spec}\ntargets: y\n",
                 classifier(len(expected)))
    columns = {"a": 0, "b": 10, "c": 100, "w": None}
    got = x_of(ds.train)
    for j, name in enumerate(expected):
        want = [1 + i % 2 for i in range(6)] if name == "w" else \
            [columns[name] + i for i in range(6)]
        np.testing.assert_array_equal(got[:, j], want)


@pytest.mark.parametrize(("spec", "message"), [
    ('"5:9"', "selects no columns"),
    ("[7]", "index 7 is outside 0..3"),
    ("[a, nope]", "no column 'nope'"),
    ("nope", "neither a column nor an index range"),
])
def test_bad_feature_selection_is_a_data_error(tmp_path: Path, table: Path, spec, message):
    assert message in data_error(tmp_path, f"train: t.csv\nfeatures: {spec}\ntargets: y\n",
                                 classifier(2))


TWO_INPUTS = """
model:
  inputs:
    wide: {shape: [2]}
    deep: {shape: [2]}
  layers:
    - concatenate: {name: concat, inputs: [wide, deep]}
    - dense: {name: out, units: 1}
compile:
  loss: mse
"""


def test_features_per_model_input(tmp_path: Path, table: Path):
    ds, setup = load(tmp_path, 'train: t.csv\ntargets: y\nfeatures: [a, b, c]\n'
                               'inputs: {wide: "0:2", deep: [1, 2]}\n', TWO_INPUTS)
    assert set(ds.train.x) == {"wide", "deep"}
    np.testing.assert_array_equal(ds.train.x["wide"], [[i, 10 + i] for i in range(6)])
    np.testing.assert_array_equal(ds.train.x["deep"], [[10 + i, 100 + i] for i in range(6)])
    # mse target: float, shaped like the output
    np.testing.assert_array_equal(ds.train.y["out"], np.array([[i % 3] for i in range(6)]))
    assert ds.train.y["out"].shape == (6, 1)


def test_multi_input_model_needs_inputs_mapping(tmp_path: Path, table: Path):
    message = data_error(tmp_path, "train: t.csv\ntargets: y\ninputs: {wide: [0, 1]}\n",
                         TWO_INPUTS)
    assert "deep" in message and "data.inputs" in message


TWO_OUTPUTS = """
model:
  input: [2]
  layers:
    - dense: {name: hidden, units: 4}
    - dense: {name: one, units: 1, inputs: hidden}
    - dense: {name: two, units: 2, inputs: hidden}
  outputs: [one, two]
compile:
  loss: {one: mse, two: mse}
"""


def test_targets_per_output(tmp_path: Path, table: Path):
    ds, _ = load(tmp_path, "train: t.csv\nfeatures: [a, b]\noutputs: {one: y, two: [c, w]}\n",
                 TWO_OUTPUTS)
    np.testing.assert_array_equal(ds.train.y["one"], [[i % 3] for i in range(6)])
    np.testing.assert_array_equal(ds.train.y["two"], [[100 + i, 1 + i % 2] for i in range(6)])
    # targets of any output are not default features
    ds, _ = load(tmp_path, "train: t.csv\noutputs: {one: y, two: [c, w]}\n", TWO_OUTPUTS)
    np.testing.assert_array_equal(x_of(ds.train), [[i, 10 + i] for i in range(6)])


def test_text_column_one_hot_with_sorted_levels(tmp_path: Path):
    rows = [[1, "red", 0], [2, "blue", 1], [3, "green", 2], [4, "red", 1]]
    write_csv(tmp_path / "t.csv", ["size", "color", "y"], rows)
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\ncategorical: [color]\n", classifier(4))
    # size, color=blue, color=green, color=red
    np.testing.assert_array_equal(x_of(ds.train), [[1, 0, 0, 1], [2, 1, 0, 0], [3, 0, 1, 0],
                                                   [4, 0, 0, 1]])
    # the one-hot columns can be picked by index like any other feature
    ds, _ = load(tmp_path, 'train: t.csv\ntargets: y\ncategorical: [color]\nfeatures: "1:"\n',
                 classifier(3))
    np.testing.assert_array_equal(x_of(ds.train)[:, 2], [1, 0, 0, 1])  # color=red


def test_numeric_categorical_column_is_one_hot(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["k", "y"], [[1, 0], [3, 1], [1, 2], [2, 1]])
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\ncategorical: [k]\n", classifier(3))
    np.testing.assert_array_equal(x_of(ds.train), [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])


def test_numeric_categorical_levels_sort_by_value(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["k", "y"], [[2, 0], [10, 1], [3, 2]])
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\ncategorical: [k]\n", classifier(3))
    # k=2, k=3, k=10
    np.testing.assert_array_equal(x_of(ds.train), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])


def test_numeric_categories_keep_every_digit(tmp_path: Path):
    """Store ids past float32's precision and past six digits stay apart; 1, 1.0 and 01 are
    one category, by value."""
    write_csv(tmp_path / "t.csv", ["store", "y"], [[1000001, 0], [1000002, 1], [16777217, 0],
                                                  [16777216, 1], ["1.0", 0], ["01", 1]])
    ds, setup = load(tmp_path, "train: t.csv\ntargets: y\ncategorical: [store]\n",
                     classifier(5))
    # store=1, 1000001, 1000002, 16777216, 16777217
    np.testing.assert_array_equal(x_of(ds.train), [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                                                   [0, 0, 0, 0, 1], [0, 0, 0, 1, 0],
                                                   [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])


def test_a_stray_word_in_a_column_of_numbers_is_named_with_its_line(tmp_path: Path):
    rows = [[i, i % 2] for i in range(30)]
    rows[20][0] = "1.2.3"
    write_csv(tmp_path / "t.csv", ["a", "y"], rows)
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(1, classes=2))
    assert "column 'a' holds text ('1.2.3' at line 22; the other values are numbers)" in message
    assert "write those cells as numbers" in message
    write_csv(tmp_path / "t.csv", ["a", "y"], [[i, i % 2] for i in range(30)])
    rows[5][0] = "n/a?"
    write_csv(tmp_path / "val.csv", ["a", "y"], rows)
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nvalidation: {path: val.csv}\n",
                         classifier(1, classes=2))
    assert "column 'a' holds text ('n/a?' at line 7 and 1 more; the other values" in message


def test_a_target_listed_as_categorical_keeps_its_class_indices(tmp_path: Path):
    """Labels 0..11 of a target also listed under categorical stay class indices (10 is
    class 10, not the third of the sorted texts)."""
    write_csv(tmp_path / "t.csv", ["a", "lab"], [[i, i % 12] for i in range(24)])
    ds, _ = load(tmp_path, "train: t.csv\ntargets: lab\ncategorical: [lab]\n",
                 classifier(1, classes=12))
    assert ds.class_names is None
    np.testing.assert_array_equal(y_of(ds.train), [i % 12 for i in range(24)])


def test_text_column_not_declared_categorical_is_named(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["size", "color", "y"], [[1, "red", 0], [2, "blue", 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert "'color'" in message and "holds text" in message and "categorical" in message
    # leaving it out of the features is fine
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nfeatures: [size]\n", classifier(1))
    np.testing.assert_array_equal(x_of(ds.train), [[1], [2]])


def test_text_target_column_becomes_class_indices(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "label"], [[1, "dog"], [2, "cat"], [3, "dog"]])
    dataset, _ = load(tmp_path, "train: t.csv\ntargets: label\n", classifier(1, classes=2))
    assert dataset.class_names == {"dense": ["cat", "dog"]}
    assert dataset.train.y["dense"].tolist() == [1, 0, 1]


def test_unknown_target_column_lists_the_columns(tmp_path: Path, table: Path):
    message = data_error(tmp_path, "train: t.csv\ntargets: label\n", classifier(4))
    assert "no column 'label'" in message and "columns: a, b, c, w, y" in message
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nsample_weight: weight\n",
                         classifier(4))
    assert "no column 'weight'" in message


def test_no_targets_is_a_data_error(tmp_path: Path, table: Path):
    assert "targets" in data_error(tmp_path, "train: t.csv\n", classifier(4))


def test_rows_with_the_wrong_number_of_values(tmp_path: Path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4\n5,6,1\n7,8,1,9\n")
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert "2 rows do not have 3 values (first at line 3)" in message
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4\n5,6,1\n")
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert "1 row does not have 3 values (at line 3)" in message
    (tmp_path / "t.csv").write_text("\n1,2,0\n3,4,1\n")  # the header line left empty
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert "t.csv: the first line, which names the columns, is empty" in message


def test_infinite_values_are_refused_with_their_column_and_line(tmp_path: Path):
    """`inf`, or a number float32 cannot hold, would poison the training (and a `mean`
    fill): refused where it is, blank lines counted."""
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n\n3,1e39,1\n5,6,1\n")
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\n",
                         classifier(2))
    assert "t.csv: column 'b' has 1 infinite values (first at line 4: inf)" in message
    (tmp_path / "t.csv").write_text('a,b,c,y\n1,2,"x\ny",0\n-inf,4,z,1\n')  # a 2-line cell
    assert "column 'a' has 1 infinite values (first at line 4: -inf)" in data_error(
        tmp_path, "train: t.csv\ntargets: y\nfeatures: [a, b]\n", classifier(2))
    # a column the model does not use may hold anything
    (tmp_path / "t.csv").write_text("a,b,y\n1,inf,0\n2,4,1\n3,5,1\n")
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nfeatures: [a]\n", classifier(1))
    assert len(ds.train) == 3


def test_cells_and_columns_a_spreadsheet_would_not_read_as_numbers(tmp_path: Path):
    """1_000 and other scripts' digits are text, as a spreadsheet has them; a trailing
    comma's unnamed empty column is nothing; an unnamed column of values is refused; a
    column whose name holds '=' is not taken for a one-hot column."""
    (tmp_path / "t.csv").write_text("a,b,y,\n1_000,1,0,\n" + "5,2,1,\n" * 10)
    assert "column 'a' holds text ('1_000' at line 2;" in data_error(
        tmp_path, "train: t.csv\ntargets: y\n", classifier(2, classes=2))
    (tmp_path / "t.csv").write_text("a,b,y,\n\u0661,1,0,\n5,2,1,\n")
    assert "column 'a' holds text" in data_error(tmp_path, "train: t.csv\ntargets: y\n",
                                                 classifier(2, classes=2))
    (tmp_path / "t.csv").write_text("a,b,y,\n1,1,0,\n5,2,1,\n")
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\n", classifier(2, classes=2))
    np.testing.assert_array_equal(x_of(ds.train), [[1, 1], [5, 2]])
    (tmp_path / "t.csv").write_text("a,b,y,\n1,1,0,7\n5,2,1,\n")
    assert "t.csv: column 4 has values but no name in the header" in data_error(
        tmp_path, "train: t.csv\ntargets: y\n", classifier(2, classes=2))
    (tmp_path / "t.csv").write_text("a=1,b,y\n1,,0\n5,2,1\n3,4,0\n")
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\n",
                 classifier(2, classes=2))
    np.testing.assert_array_equal(x_of(ds.train), [[1, 3], [5, 2], [3, 4]])


def test_blank_trailing_line_is_ignored(tmp_path: Path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n\n")
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert len(ds.train) == 2


def test_repeated_header_and_empty_file(tmp_path: Path):
    (tmp_path / "t.csv").write_text("a,a,y\n1,2,0\n")
    assert "the header names 'a' more than once" in data_error(
        tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    (tmp_path / "t.csv").write_text("a,b,y\n")
    assert "no data rows" in data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))


def test_missing_train_file_is_named(tmp_path: Path):
    message = data_error(tmp_path, "train: nope.csv\ntargets: y\n", classifier(2))
    assert "file not found" in message and "nope.csv" in message


# -- CSV: missing values ----------------------------------------------------------------------
@pytest.fixture
def gaps(tmp_path: Path) -> Path:
    """8 rows; a has 2 gaps, one in the training rows and one in the last 2 (validation)."""
    a = [1.0, None, 3.0, 5.0, 7.0, 9.0, None, 100.0]
    rows = [[a[i], i, i % 3] for i in range(8)]
    return write_csv(tmp_path / "t.csv", ["a", "b", "y"], rows)


def test_missing_error_names_column_and_count(tmp_path: Path, gaps: Path):
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(2))
    assert "missing values in a (2 rows)" in message and "data.missing" in message


def test_missing_in_an_unused_column_is_no_error(tmp_path: Path, gaps: Path):
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nfeatures: [b]\n", classifier(1))
    assert len(ds.train) == 8


def test_missing_drop_removes_rows(tmp_path: Path, gaps: Path):
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nmissing: drop\n", classifier(2))
    np.testing.assert_array_equal(x_of(ds.train)[:, 1], [0, 2, 3, 4, 5, 7])
    np.testing.assert_array_equal(y_of(ds.train), [0, 2, 0, 1, 2, 1])


def test_missing_mean_uses_the_training_split_mean(tmp_path: Path, gaps: Path):
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\nvalidation: {last: 2}\n",
                 classifier(2))
    train_mean = np.float32(np.mean([1.0, 3.0, 5.0, 7.0, 9.0]))  # 5.0, not 5 incl. 100
    np.testing.assert_array_equal(x_of(ds.train)[:, 0], [1, train_mean, 3, 5, 7, 9])
    np.testing.assert_array_equal(x_of(ds.validation)[:, 0], [train_mean, 100])
    assert x_of(ds.validation)[0, 0] == 5.0


def test_missing_mean_fills_gaps_that_only_validation_has(tmp_path: Path):
    rows = [[1, 0], [3, 1], [5, 2], [None, 1]]
    write_csv(tmp_path / "t.csv", ["a", "y"], rows)
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\nvalidation: {last: 1}\n",
                 classifier(1))
    np.testing.assert_array_equal(x_of(ds.validation), [[3.0]])


def test_missing_mean_refuses_a_column_with_no_values(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], [[i, None, i % 2] for i in range(8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way
        message = data_error(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\n",
                             classifier(2, classes=2))
    assert "column 'b' has no values in the training rows, so data.missing: mean has no " \
        "mean to fill it with" in message


def test_missing_sample_weights_follow_data_missing_as_targets_do(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "w", "y"], [[1, 1, 0], [2, None, 1], [3, 1, None],
                                                    [4, 2, 0], [5, 1, 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n",
                         classifier(1, classes=2))
    assert "missing values in y (1 row), w (1 row)" in message
    assert "set data.missing to drop (remove those rows)" in message and "mean" not in message
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\nmissing: drop\n",
                 classifier(1, classes=2))
    np.testing.assert_array_equal(x_of(ds.train)[:, 0], [1, 4, 5])
    np.testing.assert_array_equal(ds.train.sample_weight, [1, 2, 1])
    assert "missing target and sample weight values in y, w" in data_error(
        tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\nmissing: mean\n",
        classifier(1, classes=2))


def test_missing_mean_refuses_missing_targets(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "y"], [[1, 0], [3, None], [5, 2]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\n", classifier(1))
    assert "missing target values in y" in message


def test_dropped_gaps_in_a_categorical_column_add_no_level(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["k", "y"], [[1, 0], [None, 1], [2, 2], [1, 1]])
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\ncategorical: [k]\nmissing: drop\n",
                 classifier(2))
    np.testing.assert_array_equal(x_of(ds.train), [[1, 0], [0, 1], [1, 0]])


def test_non_finite_sample_weight_is_a_data_error(tmp_path: Path, table: Path):
    write_csv(tmp_path / "t.csv", ["a", "w", "y"], [[1, 1, 0], [2, "inf", 1]])
    assert "column 'w' has 1 infinite values (first at line 3" in data_error(
        tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n", classifier(1))


def test_a_feature_listed_twice_is_a_data_error(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], [[1, 2, 0], [3, 4, 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nfeatures: [a, 1, 0]\n",
                         classifier(3))
    assert "data.features: 'a' listed more than once" in message


def test_negative_sample_weights_are_a_data_error(tmp_path: Path, table: Path):
    write_csv(tmp_path / "t.csv", ["a", "w", "y"], [[1, 1, 0], [2, -0.5, 1], [3, -2, 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n",
                         classifier(1))
    assert "sample weights hold 2 negative values (the first -0.5)" in message


def test_negative_or_infinite_class_and_loss_weights_are_config_errors(tmp_path: Path):
    from nntrain.config.loader import ConfigError

    config = write_config(tmp_path, "dataset: iris\n", classifier(4, 3))
    for assignment, message in (
            ("fit.class_weight={0: -5}", "a weight is a number from 0 to 1e6, found -5"),
            ("fit.class_weight={0: .inf}", "from 0 to 1e6, found inf"),
            ("fit.class_weight={0: 1.0e300}", "from 0 to 1e6, found '1.0e300'"),
            ("compile.loss_weights={dense: -1}", "from 0 to 1e6, found -1")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(config, [assignment])
        load_config(config, [assignment], saved=True)  # a run an older nntrain trained so


# -- splits -----------------------------------------------------------------------------------
def ids_of(part: ArraySet) -> list[int]:
    return x_of(part)[:, 0].astype(int).tolist()


def test_test_then_validation_fractions(tmp_path: Path, ids: Path):
    spec = "train: ids.csv\ntargets: label\ntest: {fraction: 0.2}\nvalidation: {fraction: 0.25}\n"
    ds, _ = load(tmp_path, spec, classifier(1), seed=3)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (30, 10, 10)
    parts = [set(ids_of(p)) for p in (ds.train, ds.validation, ds.test)]
    assert set.union(*parts) == set(range(50))
    assert sum(len(p) for p in parts) == 50  # disjoint
    for part in (ds.train, ds.validation, ds.test):  # rows stay aligned
        np.testing.assert_array_equal(y_of(part), np.array(ids_of(part)) % 3)
    again, _ = load(tmp_path, spec, classifier(1), seed=3)
    other, _ = load(tmp_path, spec, classifier(1), seed=4)
    for name in ("train", "validation", "test"):
        assert ids_of(again.split(name)) == ids_of(ds.split(name))
    assert ids_of(other.test) != ids_of(ds.test)


def test_validation_last_takes_the_last_rows_before_shuffling(tmp_path: Path, ids: Path):
    ds, _ = load(tmp_path, "train: ids.csv\ntargets: label\nvalidation: {last: 7}\n",
                 classifier(1), seed=5)
    assert ids_of(ds.validation) == list(range(43, 50))
    assert ids_of(ds.train) == list(range(43))
    assert ds.test is None
    with pytest.raises(DataError, match="no test split"):
        ds.split("test")


def test_validation_last_after_a_test_fraction(tmp_path: Path, ids: Path):
    ds, _ = load(tmp_path, "train: ids.csv\ntargets: label\ntest: {fraction: 0.2}\n"
                           "validation: {last: 5}\n", classifier(1), seed=5)
    rest = sorted(set(range(50)) - set(ids_of(ds.test)))
    assert len(ds.test) == 10
    assert ids_of(ds.validation) == rest[-5:] and ids_of(ds.train) == rest[:-5]


@pytest.mark.parametrize("last", [50, 60])
def test_validation_last_needs_fewer_rows_than_there_are(tmp_path: Path, ids: Path, last):
    spec = f"train: ids.csv\ntargets: label\nvalidation: {{last: {last}}}\n"
    message = data_error(tmp_path, spec, classifier(1))
    assert f"data.validation.last is {last}" in message and "50" in message


def test_split_from_another_csv(tmp_path: Path, ids: Path):
    write_csv(tmp_path / "val.csv", ["id", "label"], [[100, 1], [101, 2], [None, 0]])
    ds, _ = load(tmp_path, "train: ids.csv\ntargets: label\nmissing: drop\n"
                           "validation: {path: val.csv}\ntest: {fraction: 0.1}\n", classifier(1))
    assert ids_of(ds.validation) == [100, 101]  # the missing policy applies to it too
    np.testing.assert_array_equal(y_of(ds.validation), [1, 2])
    assert len(ds.test) == 5 and len(ds.train) == 45


def test_text_labels_that_read_as_numbers_in_another_file_keep_their_classes(tmp_path: Path):
    """Training labels 1, 2 and 3+ are text (classes 0, 1, 2); a validation file holding only
    1 and 2 reads them as numbers, which name the same classes, not class indices."""
    write_csv(tmp_path / "t.csv", ["a", "grade"], [[1, 1], [2, 2], [3, "3+"], [4, 2]])
    write_csv(tmp_path / "val.csv", ["a", "grade"], [[5, 2], [6, 1], [7, "2.0"]])
    data = "train: t.csv\ntargets: grade\nvalidation: {path: val.csv}\n"
    ds, _ = load(tmp_path, data, classifier(1))
    assert ds.class_names == {"dense": ["1", "2", "3+"]}
    np.testing.assert_array_equal(y_of(ds.validation), [1, 0, 1])
    write_csv(tmp_path / "val.csv", ["a", "grade"], [[5, 2], [6, 4]])
    assert "val.csv: column 'grade' has labels the training data lacks: 4" in data_error(
        tmp_path, data, classifier(1))


def test_split_csv_missing_a_column_is_a_data_error(tmp_path: Path, ids: Path):
    write_csv(tmp_path / "val.csv", ["label"], [[1], [2]])
    message = data_error(tmp_path, "train: ids.csv\ntargets: label\nvalidation: {path: val.csv}\n",
                         classifier(1))
    assert "id" in message


def test_split_from_another_npz(tmp_path: Path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.standard_normal((20, 3)).astype(np.float32),
             y=rng.integers(0, 3, 20))
    np.savez(tmp_path / "val.npz", x=np.full((4, 3), 7, np.float32), y=np.array([0, 1, 2, 0]))
    ds, _ = load(tmp_path, "train: train.npz\nvalidation: {path: val.npz}\ntest: {last: 5}\n",
                 classifier(3))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (15, 4, 5)
    assert (x_of(ds.validation) == 7).all()
    np.testing.assert_array_equal(y_of(ds.validation), [0, 1, 2, 0])


def test_csv_split_of_an_npz_is_refused(tmp_path: Path):
    np.savez(tmp_path / "train.npz", x=np.zeros((5, 1), np.float32), y=np.zeros(5, int))
    write_csv(tmp_path / "val.csv", ["x", "y"], [[0, 0]])
    message = data_error(tmp_path, "train: train.npz\nvalidation: {path: val.csv}\n",
                         classifier(1))
    assert "CSV" in message


# -- .npz files -------------------------------------------------------------------------------
def test_npz_x_and_y(tmp_path: Path):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 2, 1, 0]))
    ds, setup = load(tmp_path, "train: d.npz\n", classifier(2))
    np.testing.assert_array_equal(ds.train.x["input"], x)
    np.testing.assert_array_equal(ds.train.y[setup.graph.outputs[0]], [0, 1, 2, 2, 1, 0])
    np.savez(tmp_path / "e.npz", features=x, labels=np.zeros(6, int))
    ds, _ = load(tmp_path, "train: e.npz\nx: features\ny: labels\n", classifier(2))
    np.testing.assert_array_equal(x_of(ds.train), x)
    message = data_error(tmp_path, "train: e.npz\n", classifier(2))
    assert "no array named 'x' (data.x) for the model's input; found: features, labels" \
        in message
    assert "set data.x to one of features, labels" in message
    message = data_error(tmp_path, "train: e.npz\nx: xx\n", classifier(2))
    assert "no array named 'xx' (data.x)" in message


def test_npz_named_arrays_per_input_and_output(tmp_path: Path):
    np.savez(tmp_path / "d.npz", wide=np.ones((5, 2), np.float32),
             deep=np.zeros((5, 2), np.float32), out=np.arange(5, dtype=np.float32)[:, None])
    ds, _ = load(tmp_path, "train: d.npz\n", TWO_INPUTS)
    assert (ds.train.x["wide"] == 1).all() and (ds.train.x["deep"] == 0).all()
    np.testing.assert_array_equal(ds.train.y["out"][:, 0], np.arange(5))


def test_npz_y_for_the_single_output_of_a_multi_input_model(tmp_path: Path):
    np.savez(tmp_path / "d.npz", wide=np.ones((5, 2), np.float32),
             deep=np.zeros((5, 2), np.float32), y=np.arange(5, dtype=np.float32)[:, None])
    ds, _ = load(tmp_path, "train: d.npz\n", TWO_INPUTS)
    np.testing.assert_array_equal(ds.train.y["out"][:, 0], np.arange(5))


def test_big_endian_arrays_are_read_in_this_machines_byte_order(tmp_path: Path):
    x = np.arange(40, dtype=np.float64).reshape(10, 4) / 40
    np.savez(tmp_path / "be.npz", x=x.astype(">f4"), y=(np.arange(10) % 2).astype(">i8"))
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "x.npy", x.astype(">f4"))
    np.save(tmp_path / "folder" / "y.npy", (np.arange(10) % 2).astype(">i4"))
    for train in ("be.npz", "folder"):
        ds, _ = load(tmp_path, f"train: {train}\n", classifier(4, 2))
        assert x_of(ds.train).dtype.isnative and y_of(ds.train).dtype.isnative
        np.testing.assert_array_equal(x_of(ds.train), x.astype(np.float32))
        np.testing.assert_array_equal(y_of(ds.train), np.arange(10) % 2)


def test_uneven_arrays_are_named_as_the_user_saved_them(tmp_path: Path):
    """The message names files in a folder and arrays in an .npz, weights included, so the
    user knows which one to fix."""
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "x.npy", np.zeros((10, 4), np.float32))
    np.save(folder / "y.npy", np.zeros(9, np.int64))
    np.save(folder / "w.npy", np.ones(7, np.float32))
    assert "different numbers of rows: x.npy 10, y.npy 9, w.npy 7" in data_error(
        tmp_path, "train: folder\nsample_weight: w\n", classifier(4, 2))
    np.savez(tmp_path / "d.npz", features=np.zeros((10, 4), np.float32),
             labels=np.zeros(10, np.int64), w=np.ones(8, np.float32))
    assert "different numbers of rows: 'features' 10, 'labels' 10, 'w' 8" in data_error(
        tmp_path, "train: d.npz\nx: features\ny: labels\nsample_weight: {dense: w}\n",
        classifier(4, 2))


def test_one_hot_targets_for_a_sparse_loss_and_single_values_are_data_errors(tmp_path: Path):
    x = np.zeros((6, 4), np.float32)
    np.savez(tmp_path / "wide.npz", x=x, y=np.eye(2, dtype=np.int64)[np.arange(6) % 2])
    message = data_error(tmp_path, "train: wide.npz\n", classifier(4, 2))
    assert "targets of 'dense' have shape (2,) per example; the loss takes class indices" \
        in message and "categorical_crossentropy" in message
    np.savez(tmp_path / "one.npz", x=np.float32(3), y=np.int64(1))
    assert "array 'x' is a single value, not examples" in data_error(
        tmp_path, "train: one.npz\n", classifier(4, 2))


def test_files_nntrain_does_not_read_get_their_own_message(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello\n")
    assert "notes.txt: not a data file nntrain reads" in data_error(
        tmp_path, "train: notes.txt\n", classifier(4, 2))
    (tmp_path / "fake.npz").write_text("hello\n")
    assert "fake.npz: not a data file nntrain reads" in data_error(
        tmp_path, "train: fake.npz\n", classifier(4, 2))
    with open(tmp_path / "arrays.data", "wb") as f:  # an .npz by its content, not its name
        np.savez(f, x=np.zeros((4, 4), np.float32), y=np.zeros(4, np.int64))
    ds, _ = load(tmp_path, "train: arrays.data\n", classifier(4, 2))
    assert len(ds.train) == 4
    np.savez(tmp_path / "empty.npz")
    assert "holds no arrays" in data_error(tmp_path, "train: empty.npz\n", classifier(4, 2))
    np.savez(tmp_path / "uneven.npz", x=np.zeros((10, 4), np.float32), y=np.zeros(8, np.int64))
    assert "different numbers of rows: 'x' 10, 'y' 8" in data_error(
        tmp_path, "train: uneven.npz\nvalidation: {last: 2}\n", classifier(4, 2))
    write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "y"], [[1, 2, 3, 4, 0]] * 6)
    assert "data.test.path: " in data_error(
        tmp_path, "train: t.csv\ntargets: y\ntest: {path: uneven.npz}\n", classifier(4, 2))


def test_indices_past_an_embeddings_table_are_a_data_error(tmp_path: Path):
    model = """
model:
  input: [3]
  layers:
    - embedding: {input_dim: 10, output_dim: 2}
    - flatten
    - dense: {units: 2, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
"""
    ids = np.array([[1, 2, 3], [4, 5, 12], [0, 0, 9], [7, 8, 9]], np.int32)
    np.savez(tmp_path / "ids.npz", x=ids, y=np.array([0, 1, 0, 1]))
    message = data_error(tmp_path, "train: ids.npz\n", model)
    assert "input 'input' holds indices 0..12, but the embedding 'embedding' has input_dim 10" \
        in message and "input_dim to at least 13" in message
    # new examples to predict: the input, not the trained model, is what to change
    from nntrain.data.sources import check_arrays

    np.savez(tmp_path / "fine.npz", x=np.minimum(ids, 9), y=np.array([0, 1, 0, 1]))
    _, setup = load(tmp_path, "train: fine.npz\n", model)
    with pytest.raises(DataError) as info:
        check_arrays(ArraySet({"input": ids}), setup.io, "input new.npy", targets=False)
    assert "the trained model knows ids 0..9: map the others" in info.value.hint
    np.savez(tmp_path / "ok.npz", x=np.minimum(ids, 9), y=np.array([0, 1, 0, 1]))
    ds, _ = load(tmp_path, "train: ok.npz\n", model)
    assert len(ds.train) == 4
    # ids stored as floats are fine while they are whole numbers
    np.savez(tmp_path / "floats.npz", x=np.minimum(ids, 9).astype(np.float32),
             y=np.array([0, 1, 0, 1]))
    assert len(load(tmp_path, "train: floats.npz\n", model)[0].train) == 4
    np.savez(tmp_path / "fractions.npz", x=np.minimum(ids, 9) + 0.5, y=np.array([0, 1, 0, 1]))
    assert "input 'input' holds numbers with fractions, and the embedding 'embedding' takes " \
        "whole-number ids" in data_error(tmp_path, "train: fractions.npz\n", model)


def test_npz_sample_weight(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 2, 0]),
             w=np.array([1, 2, 3, 4], np.int64))
    ds, _ = load(tmp_path, "train: d.npz\nsample_weight: w\nvalidation: {last: 1}\n",
                 classifier(2))
    np.testing.assert_array_equal(ds.train.sample_weight, [1, 2, 3])
    assert ds.train.sample_weight.dtype == np.float32
    np.testing.assert_array_equal(ds.validation.sample_weight, [4])
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 2, 0]),
             w=np.array([1, 2, 3]))
    assert "different numbers of rows: 'x' 4, 'y' 4, 'w' 3" in data_error(
        tmp_path, "train: d.npz\nsample_weight: w\n", classifier(2))


@pytest.mark.parametrize("weights", [np.array(["1"] * 4), np.ones(4, np.complex64)])
def test_sample_weights_that_are_not_real_numbers_are_a_data_error(tmp_path: Path, weights):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 2, 0]),
             w=weights, v=weights)
    for setting in ("w", "{dense: v}"):
        message = data_error(tmp_path, f"train: d.npz\nsample_weight: {setting}\n",
                             classifier(2))
        assert "values, not numbers" in message and "d.npz" in message


class _OpensAFile:
    """Unpickling this creates `path`: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_npz_with_an_object_array_is_refused_unexecuted(tmp_path: Path):
    marker = tmp_path / "pickle-ran"
    x = np.empty(2, dtype=object)
    x[0], x[1] = _OpensAFile(marker), _OpensAFile(marker)
    np.savez(tmp_path / "evil.npz", x=x, y=np.array([0, 1]))
    message = data_error(tmp_path, "train: evil.npz\n", classifier(1))
    assert "evil.npz" in message and "pickle" in message
    assert not marker.exists()
    # the payload is live: loading it with pickles allowed does run it
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as f:
        f["x"]
    assert marker.exists()


def test_not_an_npz_is_a_data_error(tmp_path: Path):
    (tmp_path / "d.npz").write_bytes(b"not a zip file")
    assert "d.npz: not a data file nntrain reads" in data_error(tmp_path, "train: d.npz\n",
                                                                classifier(1))
    np.save(tmp_path / "d.npy", np.zeros((3, 1)))
    assert "inputs and targets" in data_error(tmp_path, "train: d.npy\n", classifier(1))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_inputs_are_a_data_error(tmp_path: Path, bad):
    x = np.zeros((4, 2), np.float32)
    x[1, 1] = bad
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0]))
    message = data_error(tmp_path, "train: d.npz\n", classifier(2))
    assert "input 'input' has 1 NaN or infinite values" in message


def test_shape_mismatch_is_a_data_error(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 2, 0]))
    message = data_error(tmp_path, "train: d.npz\n", classifier(2))
    assert "(3,)" in message and "(2,)" in message


@pytest.mark.parametrize(("labels", "seen"), [([0, 1, 3], "0..3"), ([-1, 0, 2], "-1..2")])
def test_labels_outside_the_class_range(tmp_path: Path, labels, seen):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.array(labels))
    message = data_error(tmp_path, "train: d.npz\n", classifier(2))
    assert f"range over {seen}" in message and "3 classes (0..2)" in message
    write_csv(tmp_path / "t.csv", ["a", "y"], [[0, v] for v in labels])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(1))
    assert f"range over {seen}" in message and "(0..2)" in message


def test_fractional_npz_labels_are_refused(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.array([0.0, 1.5, 2.0]))
    assert "class indices" in data_error(tmp_path, "train: d.npz\n", classifier(2))


def test_fractional_csv_labels_are_refused(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "y"], [[0, 0], [1, 1.5], [2, 2]])
    assert "class indices" in data_error(tmp_path, "train: t.csv\ntargets: y\n", classifier(1))


def test_one_hot_refuses_fractional_labels(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.array([0.0, 1.5, 2.0]))
    data_error(tmp_path, "train: d.npz\none_hot: true\n",
               classifier(2, loss="categorical_crossentropy"))


# -- one_hot ----------------------------------------------------------------------------------
def test_one_hot_labels_for_categorical_crossentropy(tmp_path: Path, table: Path):
    cce = classifier(3, loss="categorical_crossentropy")
    ds, _ = load(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\none_hot: true\n"
                           "validation: {last: 2}\n", cce)
    np.testing.assert_array_equal(y_of(ds.train), np.eye(3)[[0, 1, 2, 0]])
    np.testing.assert_array_equal(y_of(ds.validation), np.eye(3)[[1, 2]])
    assert y_of(ds.train).dtype == np.float32
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 3), np.float32), y=np.array([2, 0, 1]))
    ds, _ = load(tmp_path, "train: d.npz\none_hot: true\n", cce)
    np.testing.assert_array_equal(y_of(ds.train), np.eye(3)[[2, 0, 1]])
    # rows that are already one-hot are kept
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 3), np.float32), y=np.eye(3)[[1, 1, 0]])
    ds, _ = load(tmp_path, "train: d.npz\none_hot: true\n", cce)
    np.testing.assert_array_equal(y_of(ds.train), np.eye(3)[[1, 1, 0]])


def test_integer_labels_without_one_hot_mention_one_hot(tmp_path: Path, table: Path):
    cce = classifier(3, loss="categorical_crossentropy")
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n", cce)
    assert "one_hot" in message
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 3), np.float32), y=np.array([2, 0, 1]))
    assert "one_hot" in data_error(tmp_path, "train: d.npz\n", cce)


def test_one_hot_label_out_of_range(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 3), np.float32), y=np.array([2, 0, 3]))
    message = data_error(tmp_path, "train: d.npz\none_hot: true\n",
                         classifier(3, loss="categorical_crossentropy"))
    assert "0..3" in message and "3 units" in message


# -- built-in datasets ------------------------------------------------------------------------
def test_iris(tmp_path: Path):
    ds, _ = load(tmp_path, "dataset: iris\n", classifier(4))
    assert len(ds.train) == 150
    np.testing.assert_allclose(x_of(ds.train)[0], [5.1, 3.5, 1.4, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(np.bincount(y_of(ds.train)), [50, 50, 50])
    assert ds.class_names == {"dense": IRIS_CLASSES}
    ds, _ = load(tmp_path, "dataset: iris\nfeatures: [petal_length, petal_width]\n"
                           "targets: is_setosa\n", regressor(2))
    assert x_of(ds.train).shape == (150, 2)
    np.testing.assert_allclose(x_of(ds.train)[0], [1.4, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(y_of(ds.train)[:, 0], [1] * 50 + [0] * 100)
    assert ds.class_names is None


def test_iris_config_splits(tmp_path: Path):
    loaded = load_config(Path(__file__).resolve().parents[1] / "configs" / "iris.yaml")
    setup = prepare(loaded)
    ds = load_dataset(loaded.config.data, setup.io, tmp_path, loaded.config.seed)
    assert (len(ds.train), len(ds.test)) == (120, 30)
    assert ds.validation is None


def test_xor(tmp_path: Path):
    ds, _ = load(tmp_path, "dataset: xor\n", regressor(2))
    np.testing.assert_array_equal(x_of(ds.train), [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y_of(ds.train)[:, 0], [0, 1, 1, 0])


@pytest.mark.skipif(not HOUSING_CSV.is_file(), reason=f"{HOUSING_CSV} not present")
def test_california_housing_from_the_handson_csv(tmp_path: Path):
    source = f"dataset: california_housing\nsource: {HOUSING_CSV}\n"
    message = data_error(tmp_path, source, regressor(8))
    assert "AveBedrms (207 rows)" in message
    ds, _ = load(tmp_path, source + "missing: drop\n", regressor(8))
    assert len(ds.train) == 20_640 - 207
    # -122.23,37.88,41.0,880.0,129.0,322.0,126.0,8.3252,452600.0,NEAR BAY
    # MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude, Longitude
    expected = [8.3252, 41.0, 880 / 126, 129 / 126, 322.0, 322 / 126, 37.88, -122.23]
    np.testing.assert_allclose(x_of(ds.train)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(y_of(ds.train)[0], [4.526], rtol=1e-6)
    raw = np.genfromtxt(HOUSING_CSV, delimiter=",", skip_header=1, usecols=range(9))
    kept = raw[~np.isnan(raw).any(axis=1)]
    np.testing.assert_allclose(y_of(ds.train)[:, 0], kept[:, 8] / 100_000, rtol=1e-6)
    np.testing.assert_allclose(x_of(ds.train)[:, 2], kept[:, 3] / kept[:, 6], rtol=1e-5)
    # features by name, in the textbook's order
    ds, _ = load(tmp_path, source + "missing: drop\nfeatures: [Longitude, MedInc]\n",
                 regressor(2))
    np.testing.assert_allclose(x_of(ds.train)[0], [-122.23, 8.3252], rtol=1e-6)
    ds, _ = load(tmp_path, source + 'missing: drop\ninputs: {wide: "0:5", deep: "2:8"}\n'
                 "test: {fraction: 0.2}\nvalidation: {fraction: 0.2}\n", """
model:
  inputs: {wide: {shape: [5]}, deep: {shape: [6]}}
  layers:
    - concatenate: {inputs: [wide, deep]}
    - dense: {name: out, units: 1}
compile:
  loss: mse
""")
    assert len(ds.test) == round(20_433 * 0.2)
    assert len(ds.train) + len(ds.validation) + len(ds.test) == 20_433
    np.testing.assert_array_equal(ds.train.x["wide"][:, 2:], ds.train.x["deep"][:, :3])


# -- weights: class_weight x sample_weight ----------------------------------------------------
WEIGHTED = """
model:
  input: [2]
  layers:
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: {sgd: 0.1}
  metrics: [accuracy]
"""


def test_class_weight_and_sample_weight_multiply_in_the_training_loss(tmp_path: Path):
    rows = [[0.5, -1.0, 2.0, 0], [1.5, 0.3, 1.0, 1], [-0.7, 0.8, 3.0, 2], [0.1, 0.2, 0.5, 0],
            [2.0, -0.4, 1.0, 1], [-1.2, 1.1, 2.0, 2]]
    write_csv(tmp_path / "t.csv", ["a", "b", "w", "y"], rows)
    ds, setup = load(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n", WEIGHTED,
                     extra="fit:\n  class_weight: {0: 0.0, 1: 3.0, 2: 0.5}\n")
    class_weight = class_weight_vector(setup)
    np.testing.assert_array_equal(class_weight, [0.0, 3.0, 0.5])
    n = len(ds.train)
    params, state = setup.model.init(jax.random.key(0))
    outputs, _, _ = setup.model.apply(params, state, {"input": x_of(ds.train)})
    probs = np.asarray(next(iter(outputs.values())), np.float64)
    labels = y_of(ds.train)
    per_example = -np.log(probs[np.arange(n), labels])
    sw = ds.train.sample_weight.astype(np.float64)
    expected = float((per_example * sw * class_weight[labels]).sum() / n)
    additive = float((per_example * (sw + class_weight[labels])).sum() / n)
    ignored = float((per_example * sw).sum() / n)
    assert min(abs(expected - additive), abs(expected - ignored)) > 0.05 * expected

    programs = Programs(setup, batch_size=8, eval_batch_size=8, steps_per_call=1,
                        class_weight=class_weight)
    data = to_device(ds.train)
    # evaluation (Keras's evaluate / val_loss) weighs by sample_weight only
    evaluated = programs.evaluate(params, state, data, n)["loss"]
    assert evaluated == pytest.approx(ignored, rel=1e-5)
    carry = {"params": params, "state": state, "opt_state": setup.optimizer.init(params),
             "step": jax.numpy.int32(0)}
    order = epoch_order(jax.random.key(1), 0, n, 8, False)
    _, sums, _ = programs.train_epoch(carry, data, order, n, jax.random.key(2))
    # one batch holds every row, so the epoch's loss is the loss at the initial weights
    assert programs.layout.result(sums)["loss"] == pytest.approx(expected, rel=1e-5)


def test_metrics_ignore_the_weights_and_weighted_metrics_use_them(tmp_path: Path):
    """Keras 3: `metrics` count every example once, `weighted_metrics` weigh them by the
    sample weights (times class_weight in training); a name taken by a metric is
    weighted_<name>."""
    rows = [[0.5, -1.0, 2.0, 0], [1.5, 0.3, 1.0, 1], [-0.7, 0.8, 3.0, 2], [0.1, 0.2, 0.5, 0],
            [2.0, -0.4, 1.0, 1], [-1.2, 1.1, 2.0, 2], [0.3, 0.9, 4.0, 1]]
    write_csv(tmp_path / "t.csv", ["a", "b", "w", "y"], rows)
    config = WEIGHTED.replace("metrics: [accuracy]",
                              "metrics: [accuracy]\n"
                              "  weighted_metrics: [accuracy, sparse_categorical_accuracy]")
    ds, setup = load(tmp_path, "train: t.csv\ntargets: y\nsample_weight: w\n", config,
                     extra="fit:\n  class_weight: {0: 0.0, 1: 3.0, 2: 0.5}\n")
    assert setup.log_names() == ["loss", "accuracy", "weighted_accuracy",
                                 "sparse_categorical_accuracy"]
    n = len(ds.train)
    params, state = setup.model.init(jax.random.key(0))
    outputs, _, _ = setup.model.apply(params, state, {"input": x_of(ds.train)})
    probs = np.asarray(next(iter(outputs.values())), np.float64)
    labels = y_of(ds.train)
    hit = (probs.argmax(-1) == labels).astype(np.float64)
    sw = ds.train.sample_weight.astype(np.float64)
    cw = class_weight_vector(setup).astype(np.float64)[labels]
    assert 0 < hit.sum() < n  # a mix of hits and misses: the weighting shows

    programs = Programs(setup, batch_size=4, eval_batch_size=4, steps_per_call=1,
                        class_weight=class_weight_vector(setup))
    data = to_device(ds.train)
    evaluated = programs.evaluate(params, state, data, n)  # 7 rows: one padded batch
    assert evaluated["accuracy"] == pytest.approx(hit.mean(), rel=1e-6)
    assert evaluated["weighted_accuracy"] == pytest.approx((hit * sw).sum() / sw.sum(), rel=1e-6)
    carry = {"params": params, "state": state, "opt_state": setup.optimizer.init(params),
             "step": jax.numpy.int32(0)}
    programs = Programs(setup, batch_size=8, eval_batch_size=8, steps_per_call=1,
                        class_weight=class_weight_vector(setup))
    order = epoch_order(jax.random.key(1), 0, n, 8, False)
    _, sums, _ = programs.train_epoch(carry, data, order, n, jax.random.key(2))
    trained = programs.layout.result(sums)  # one batch: the figures at the initial weights
    assert trained["accuracy"] == pytest.approx(hit.mean(), rel=1e-6)
    assert trained["weighted_accuracy"] == pytest.approx(
        (hit * sw * cw).sum() / (sw * cw).sum(), rel=1e-6)


def test_digest_covers_sample_weights():
    x, y = {"input": np.zeros((2, 1), np.float32)}, {"out": np.zeros(2, np.int32)}
    a = ArraySet(x, y, np.array([1, 1], np.float32))
    b = ArraySet(x, y, np.array([1, 5], np.float32))
    assert a.digest() != b.digest()


# -- through the CLI --------------------------------------------------------------------------




def _history(work: Path) -> list[dict[str, float]]:
    (run,) = [p.parent for p in work.glob("runs/*/*/run.json")]
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [{k: float(row[k]) for k in ("loss", "accuracy")} for row in rows]


@pytest.mark.parametrize(("loss", "data_extra"), [
    ("sparse_categorical_crossentropy", ""),
    ("categorical_crossentropy", "one_hot: true\n"),  # the class is the one-hot's argmax
])
def test_cli_fit_weights_multiply_like_a_product_weight_column(tmp_path: Path, loss: str,
                                                                data_extra: str):
    """class_weight c with sample weights s trains exactly like sample weights s * c[y] and
    no class_weight (Keras multiplies them); s + c[y] or ignoring c would not."""
    class_weight = {0: 0.0, 1: 3.0, 2: 0.5}
    rng = np.random.default_rng(7)
    rows = []
    for i in range(24):
        a, b = rng.standard_normal(2).round(3)
        s, y = 1 + i % 2, i % 3
        rows.append([a, b, s, s * class_weight[y], y])
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "t.csv", ["a", "b", "s", "sc", "y"], rows)
    fit = "fit:\n  epochs: 3\n  batch_size: 8\n"
    histories = []
    for name, weights, extra in (
            ("classes", "s", fit + "  class_weight: {0: 0.0, 1: 3.0, 2: 0.5}\n"),
            ("product", "sc", fit)):
        config = write_config(data, f"train: t.csv\ntargets: y\nfeatures: [a, b]\n"
                                    f"sample_weight: {weights}\n{data_extra}",
                              WEIGHTED.replace("sparse_categorical_crossentropy", loss),
                              seed=3, extra=extra, file=f"{name}.yaml")
        work = tmp_path / name
        work.mkdir()
        result = nntrain("fit", str(config), "-q", cwd=work)
        assert result.exit_code == 0, result.output
        histories.append(_history(work))
    with_class_weight, with_product = histories
    assert len(with_class_weight) == 3
    for a, b in zip(with_class_weight, with_product, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["accuracy"] == pytest.approx(b["accuracy"], rel=1e-5)


def test_cli_data_error_exits_2_before_creating_a_run(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "t.csv", ["size", "color", "y"], [[1, "red", 0], [2, "blue", 1]])
    config = write_config(data, "train: t.csv\ntargets: y\n", classifier(2))
    result = nntrain("fit", str(config), cwd=tmp_path)  # the CSV is found next to the config
    assert result.exit_code == 2
    assert "'color'" in result.output and "categorical" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_data_file_given_with_set_is_found_from_the_current_folder(tmp_path: Path):
    configs, work = tmp_path / "configs", tmp_path / "work"
    configs.mkdir()
    work.mkdir()
    rows = [[i % 5, (i * 3) % 7, i % 2] for i in range(40)]
    write_csv(work / "mine.csv", ["a", "b", "y"], rows)
    write_csv(configs / "mine.csv", ["a", "b", "y"], rows[:20])  # the config's own
    config = write_config(configs, "train: mine.csv\ntargets: y\n", classifier(2, 2))
    result = nntrain("fit", str(config), "-q", "--epochs", "1", cwd=work)
    assert result.exit_code == 0, result.output
    (run,) = work.glob("runs/t/*")
    assert json.loads((run / "run.json").read_text())["data"]["train"]["examples"] == 20
    result = nntrain("fit", str(config), "-q", "--epochs", "1", "--set", "data.train=mine.csv",
                     cwd=work)
    assert result.exit_code == 0, result.output
    run = max(work.glob("runs/t/*"))
    assert json.loads((run / "run.json").read_text())["data"]["train"]["examples"] == 40
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["train"] == \
        str(work / "mine.csv")


def test_class_weight_reads_classes_as_keras_does():
    one_hot = jnp.asarray(np.eye(3, dtype=np.float32)[[2, 0, 1]])
    assert class_indices(one_hot).tolist() == [2, 0, 1]
    assert class_indices(jnp.asarray([[1.0], [0.0], [1.0]])).tolist() == [1, 0, 1]
    assert class_indices(jnp.asarray([2, 0, 1])).tolist() == [2, 0, 1]


@pytest.mark.parametrize(("model", "ok"), [
    (WEIGHTED.replace("sparse_categorical_crossentropy", "categorical_crossentropy"), True),
    (WEIGHTED.replace("units: 3, activation: softmax", "units: 1, activation: sigmoid")
     .replace("sparse_categorical_crossentropy", "binary_crossentropy"), True),
    (WEIGHTED.replace("sparse_categorical_crossentropy", "mse"), False),
    # a class per time step (outputs of shape (4, 3)): no single class per example
    (WEIGHTED.replace("input: [2]", "input: [4, 2]"), False),
])
def test_class_weight_takes_the_cross_entropies(tmp_path: Path, model: str, ok: bool):
    config = write_config(tmp_path, "dataset: synthetic\n", model,
                          extra="fit:\n  class_weight: {0: 1.0, 1: 2.0}\n")
    result = nntrain("validate", str(config))
    assert (result.exit_code == 0) is ok, result.output
    if not ok:
        assert "class_weight needs one output of one class per example" in result.output
        assert "did you mean" not in result.output


def test_synthetic_data_gives_a_tagger_a_label_per_step(tmp_path: Path):
    dataset, _ = load(tmp_path, "dataset: synthetic\nsynthetic: {samples: 64, classes: 5}\n", """
model:
  inputs: {tokens: {shape: [7], dtype: int32}}
  layers:
    - embedding: {input_dim: 256, output_dim: 4, mask_zero: true}
    - lstm: {units: 8, return_sequences: true}
    - dense: {units: 5, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
""")
    labels = dataset.train.y["dense"]
    assert labels.shape == (64, 7) and labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(5))


def test_one_hot_converts_only_the_outputs_trained_with_categorical_crossentropy(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32),
             kind=np.array([2, 0, 1, 2]), value=np.array([0.5, 1.5, -2.0, 3.25], np.float32))
    ds, _ = load(tmp_path, "train: d.npz\none_hot: true\n", """
model:
  input: [2]
  layers:
    - dense: {units: 3, activation: softmax, name: kind}
    - dense: {units: 1, name: value, inputs: input}
  outputs: [kind, value]
compile:
  loss: {kind: categorical_crossentropy, value: mse}
""")
    np.testing.assert_array_equal(ds.train.y["kind"], np.eye(3)[[2, 0, 1, 2]])
    np.testing.assert_array_equal(ds.train.y["value"].ravel(), [0.5, 1.5, -2.0, 3.25])


def test_one_hot_without_categorical_crossentropy_is_refused(tmp_path):
    config = write_config(tmp_path, "dataset: synthetic\none_hot: true\n", classifier(6))
    result = nntrain("validate", str(config))
    assert result.exit_code == 2
    assert "data.one_hot: one_hot makes one-hot targets for categorical_crossentropy, and no " \
        "output is trained with it" in " ".join(result.output.split())


def test_each_output_keeps_the_class_names_of_its_text_labels(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "kind", "size", "value"],
              [[1, "dog", "big", 0.5], [2, "cat", "small", 1.5], [3, "dog", "small", 2.0]])
    dataset, _ = load(tmp_path, "train: t.csv\noutputs: {kind: kind, size: size, value: value}\n",
                      """
model:
  input: [1]
  layers:
    - dense: {units: 2, activation: softmax, name: kind}
    - dense: {units: 2, activation: softmax, name: size, inputs: input}
    - dense: {units: 1, name: value, inputs: input}
  outputs: [kind, size, value]
compile:
  loss: {kind: sparse_categorical_crossentropy, size: sparse_categorical_crossentropy,
         value: mse}
""")
    assert dataset.class_names == {"kind": ["cat", "dog"], "size": ["big", "small"]}
    # recorded with the run, so predict names each output's classes
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text() + "fit: {epochs: 1, batch_size: 3}\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    (run,) = (tmp_path / "runs" / "t").iterdir()
    result = nntrain("predict", str(run), "--split", "train", "-o", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert {r["kind_true_label"] for r in rows} == {"cat", "dog"}
    assert {r["size_true_label"] for r in rows} == {"big", "small"}
    assert {r["kind_label"] for r in rows} <= {"cat", "dog"}


def test_evaluate_and_predict_read_only_the_held_out_file_they_are_asked_for(
        tmp_path: Path, ids: Path):
    write_csv(tmp_path / "val.csv", ["id", "label"], [[100, 1], [101, 2]])
    write_csv(tmp_path / "test.csv", ["id", "label"], [[200, 0], [201, 1], [202, 2]])
    config = write_config(tmp_path, "train: ids.csv\ntargets: label\nvalidation: {path: "
                                    "val.csv}\ntest: {path: test.csv}\n", classifier(1),
                          extra="fit: {epochs: 1}\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    (run,) = tmp_path.glob("runs/t/*")
    (tmp_path / "val.csv").unlink()  # moved away after training
    evaluated = nntrain("evaluate", str(run), "--split", "test")
    assert evaluated.exit_code == 0, evaluated.output
    assert "test split (3 examples)" in evaluated.output
    predicted = nntrain("predict", str(run), "--split", "test")
    assert predicted.exit_code == 0, predicted.output
    gone = nntrain("evaluate", str(run), "--split", "validation")
    assert gone.exit_code == 2 and "val.csv" in gone.output


def test_a_held_out_file_without_sample_weights_is_evaluated_unweighted(tmp_path: Path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)).astype(np.float32), rng.integers(0, 3, 40)
    np.savez(tmp_path / "train.npz", x=x, y=y, w=np.linspace(0.5, 2, 40))
    np.savez(tmp_path / "test.npz", x=x[:10], y=y[:10])
    ds, _ = load(tmp_path, "train: train.npz\nsample_weight: w\ntest: {path: test.npz}\n",
                 classifier(2))
    assert ds.train.sample_weight is not None and ds.test.sample_weight is None
    config = write_config(tmp_path, "train: train.npz\nsample_weight: w\n"
                                    "test: {path: test.npz}\n", classifier(2),
                          extra="fit: {epochs: 1}\n")
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output


def test_one_hot_makes_a_one_hot_row_of_each_steps_label(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.ones((2, 3), np.int32), y=np.array([[0, 1, 1], [1, 0, 0]]))
    ds, _ = load(tmp_path, "train: d.npz\none_hot: true\n", """
model:
  inputs: {ids: {shape: [3], dtype: int32}}
  layers:
    - embedding: {input_dim: 4, output_dim: 2}
    - dense: {units: 2, activation: softmax}
compile:
  loss: categorical_crossentropy
""")
    np.testing.assert_array_equal(ds.train.y["dense"], np.eye(2)[[[0, 1, 1], [1, 0, 0]]])


# -- what users get wrong in their own tables and targets -------------------------------------
def test_a_held_out_csv_lacking_a_filled_column_is_a_data_error(tmp_path: Path):
    """With data.missing: mean the fill came before the check that every split has the
    column, and a validation file without it raised a KeyError."""
    write_csv(tmp_path / "t.csv", ["a", "b", "y"], [[1, None, 0], [2, 5, 1], [3, 6, 2]] * 4)
    write_csv(tmp_path / "v.csv", ["a", "y"], [[1, 0], [2, 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\nmissing: mean\n"
                                   "validation: {path: v.csv}\n", classifier(2))
    assert "v.csv: column 'b' is missing" in message


def test_missing_value_markers_and_empty_text_cells_are_missing_values(tmp_path: Path):
    rows = [[1, "NA", "red", "cat"], [2, "4", "", "dog"], [3, "null", "blue", ""],
            [4, "N/A", "red", "dog"], [5, "7", "blue", "cat"]]
    write_csv(tmp_path / "t.csv", ["a", "b", "color", "y"], rows)
    data = "train: t.csv\ntargets: y\ncategorical: [color]\n"
    message = data_error(tmp_path, data, classifier(4, 2))
    assert "missing values in b (3 rows), color (1 row), y (1 row)" in message
    ds, _ = load(tmp_path, data + "missing: drop\n", classifier(4, 2))
    np.testing.assert_array_equal(x_of(ds.train)[:, 0], [5])  # the only complete row
    # mean fills numbers; a missing category is none of them; a missing label is refused
    message = data_error(tmp_path, data + "missing: mean\n", classifier(4, 2))
    assert "missing target values in y" in message
    write_csv(tmp_path / "t.csv", ["a", "b", "color", "y"], [r[:3] + ["cat"] for r in rows])
    ds, _ = load(tmp_path, data + "missing: mean\n", classifier(4, 2))
    np.testing.assert_allclose(x_of(ds.train)[:, 1], [5.5, 4, 5.5, 5.5, 7])
    np.testing.assert_array_equal(x_of(ds.train)[1, 2:], [0, 0])  # color=blue, color=red


def test_a_category_the_training_data_lacks_is_a_data_error(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "city", "y"], [[1, "Lyon", 0], [2, "Nice", 1]] * 3)
    write_csv(tmp_path / "test.csv", ["a", "city", "y"], [[1, "Lille", 0], [2, "Nice", 1]])
    message = data_error(tmp_path, "train: t.csv\ntargets: y\ncategorical: [city]\n"
                                   "test: {path: test.csv}\n", classifier(3, 2))
    assert "test.csv: column 'city' has categories the training data lacks: Lille" in message


def test_text_labels_for_a_regression_output_are_refused(tmp_path: Path):
    write_csv(tmp_path / "t.csv", ["a", "grade"], [[1, "cheap"], [2, "lux"], [3, "mid"]])
    message = data_error(tmp_path, "train: t.csv\ntargets: grade\n", regressor(1))
    assert "column 'grade' holds text labels (cheap, lux, mid), and output 'dense' is " \
        "trained with mean_squared_error" in message
    # two text labels are classes 0 and 1 for a sigmoid unit
    write_csv(tmp_path / "t.csv", ["a", "ok"], [[1, "no"], [2, "yes"], [3, "no"]])
    ds, _ = load(tmp_path, "train: t.csv\ntargets: ok\n",
                 classifier(1, 1, "binary_crossentropy").replace("softmax", "sigmoid"))
    np.testing.assert_array_equal(y_of(ds.train), [[0], [1], [0]])


@pytest.mark.parametrize(("y", "ok"), [([0, 1, 1, 0], True), ([0.25, 1, 0.5, 0], True),
                                       ([0, 1, 2, 1], False), ([0, 255, 128, 3], False)])
def test_binary_crossentropy_takes_targets_in_0_to_1(tmp_path: Path, y: list, ok: bool):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2), np.float32), y=np.array(y))
    model = classifier(2, 1, "binary_crossentropy").replace("softmax", "sigmoid")
    if ok:
        load(tmp_path, "train: d.npz\n", model)
        return
    message = data_error(tmp_path, "train: d.npz\n", model)
    assert f"range over 0..{max(y)}, and binary_crossentropy takes targets in 0..1" in message


@pytest.mark.parametrize(("model", "y_shape", "hint"), [
    # class indices on a 3-unit output trained with mse: the classifier's loss, not one_hot
    (regressor(2, 3), (6,), "class indices need sparse_categorical_crossentropy"),
    (classifier(2, 3, "categorical_crossentropy"), (6,), "set data.one_hot: true"),
    # a label per step for an output of one prediction per sequence
    (classifier(2, 3), (6, 4), "return_sequences: true on the recurrent layer before it"),
])
def test_shape_hints_name_the_fix(tmp_path: Path, model: str, y_shape: tuple, hint: str):
    np.savez(tmp_path / "d.npz", x=np.ones((6, 2), np.float32),
             y=np.zeros(y_shape, np.int32))
    assert hint in data_error(tmp_path, "train: d.npz\n", model)


def test_predict_reads_new_rows_of_a_csv_as_the_training_table_was_encoded(tmp_path: Path):
    """A model trained on a CSV predicts a CSV of new rows (no target column needed): the
    same features, one-hot categories and fill values, so the rows of a split written out
    as a file predict exactly as the split does."""
    rng = np.random.default_rng(3)
    header = ["size", "city", "age", "kind"]
    rows = [[round(float(rng.normal()), 3), ["Lyon", "Nice", "Paris"][i % 3],
             None if i % 7 == 0 else int(rng.integers(1, 50)), ["cat", "dog"][i % 2]]
            for i in range(60)]
    write_csv(tmp_path / "t.csv", header, rows)
    write_csv(tmp_path / "new.csv", header[:3], [r[:3] for r in rows[-10:]])
    config = write_config(tmp_path, "train: t.csv\ntargets: kind\ncategorical: [city]\n"
                                    "missing: mean\nvalidation: {last: 10}\n",
                          classifier(5, 2), extra="fit: {epochs: 2}\n")
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.glob("runs/t/*")
    split = nntrain("predict", str(run), "--split", "validation", "-o", str(tmp_path / "a.csv"))
    new = nntrain("predict", str(run), str(tmp_path / "new.csv"), "-o", str(tmp_path / "b.csv"))
    assert split.exit_code == 0 and new.exit_code == 0, split.output + new.output
    a = list(csv.DictReader((tmp_path / "a.csv").open()))
    b = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["probability"] for r in a] == [r["probability"] for r in b]
    assert {r["label"] for r in b} <= {"cat", "dog"}
    assert "warning" not in new.output
    # the run recorded the encoding: a training file changed since (other fill means, a
    # new category), or gone, changes nothing
    original = [list(row) for row in rows]
    for row in rows[:20]:
        row[1], row[2] = "Brest", 99
    write_csv(tmp_path / "t.csv", header, rows)
    changed = nntrain("predict", str(run), str(tmp_path / "new.csv"), "-o",
                      str(tmp_path / "c.csv"))
    (tmp_path / "t.csv").unlink()
    gone = nntrain("predict", str(run), str(tmp_path / "new.csv"), "-o",
                   str(tmp_path / "d.csv"))
    assert changed.exit_code == 0 and gone.exit_code == 0, changed.output + gone.output
    for name in ("c.csv", "d.csv"):
        assert list(csv.DictReader((tmp_path / name).open())) == b
    write_csv(tmp_path / "t.csv", header, rows)
    info = json.loads((run / "run.json").read_text())
    good = info["table_encoding"]
    for damage in ({"inputs": "size"}, {"inputs": {"input": []}},
                   {"fill": {"age": int("9" * 400)}}, {"fill": {"age": None}},
                   {"categories": {"city": [1]}}):
        info["table_encoding"] = {**good, **damage}
        (run / "run.json").write_text(json.dumps(info))
        damaged = nntrain("predict", str(run), str(tmp_path / "new.csv"))
        assert damaged.exit_code == 2, (damage, damaged.output)
        assert "the table encoding is damaged" in damaged.output
    del info["table_encoding"]  # an older nntrain's run: encoded from the training file now
    (run / "run.json").write_text(json.dumps(info))
    older = nntrain("predict", str(run), str(tmp_path / "new.csv"))
    assert older.exit_code == 2  # a new category: one more input column than the model's
    assert "has examples of shape (6,), the model expects (5,)" in older.output
    assert "the data files changed since it trained (a new category adds a column)" in \
        " ".join(older.output.split())
    write_csv(tmp_path / "t.csv", header, original)
    same = nntrain("predict", str(run), str(tmp_path / "new.csv"), "-o", str(tmp_path / "e.csv"))
    assert same.exit_code == 0 and "warning" not in same.output, same.output
    assert list(csv.DictReader((tmp_path / "e.csv").open())) == b
    original[0][0] = 5.0  # changed, same form: said, and encoded from the file as it is now
    write_csv(tmp_path / "t.csv", header, original)
    warned = nntrain("predict", str(run), str(tmp_path / "new.csv"))
    assert warned.exit_code == 0, warned.output
    assert "encoded (categories, fill values) as the training file is now" in " ".join(
        warned.output.split())
    # a column the model needs, missing from the file, is named
    write_csv(tmp_path / "bad.csv", ["size", "age"], [[1, 2]])
    bad = nntrain("predict", str(run), str(tmp_path / "bad.csv"))
    assert bad.exit_code == 2 and "column 'city' is missing" in bad.output
    assert "Traceback" not in bad.output


def test_predict_reads_new_housing_rows_in_the_layout_the_model_was_trained_from(
        tmp_path: Path):
    """california_housing from handson-ml2's raw columns: new rows in that layout (without
    the price) are derived into the 8 features as the training rows were."""
    rng = np.random.default_rng(4)
    header = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
              "population", "households", "median_income", "median_house_value",
              "ocean_proximity"]
    rows = [[round(-122 + rng.normal(), 2), round(37 + rng.normal(), 2), int(rng.integers(1, 52)),
             int(rng.integers(500, 5000)), int(rng.integers(100, 900)),
             int(rng.integers(300, 3000)), int(rng.integers(100, 900)),
             round(float(rng.uniform(1, 10)), 4), int(rng.integers(50_000, 500_000)), "INLAND"]
            for _ in range(40)]
    write_csv(tmp_path / "housing.csv", header, rows)
    new = [r[:8] + r[9:] for r in rows[-10:]]  # no median_house_value
    write_csv(tmp_path / "new.csv", header[:8] + header[9:], new)
    config = write_config(tmp_path, "dataset: california_housing\nsource: housing.csv\n"
                                    "validation: {last: 10}\n", regressor(8),
                          extra="fit: {epochs: 1}\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    (run,) = tmp_path.glob("runs/t/*")
    split = nntrain("predict", str(run), "--split", "validation", "-o", str(tmp_path / "a.csv"))
    fresh = nntrain("predict", str(run), str(tmp_path / "new.csv"), "-o",
                    str(tmp_path / "b.csv"))
    assert split.exit_code == 0 and fresh.exit_code == 0, split.output + fresh.output
    a = list(csv.DictReader((tmp_path / "a.csv").open()))
    b = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(b) == 10
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]


def test_predictions_of_several_target_columns_are_named_after_them(tmp_path: Path):
    rng = np.random.default_rng(1)
    write_csv(tmp_path / "t.csv", ["a", "b", "price", "age"],
              [[*rng.normal(size=2).round(3), *rng.normal(size=2).round(3)] for _ in range(20)])
    config = write_config(tmp_path, "train: t.csv\ntargets: [price, age]\n"
                                    "validation: {last: 5}\n", regressor(2, 2),
                          extra="fit: {epochs: 1}\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    (run,) = tmp_path.glob("runs/t/*")
    result = nntrain("predict", str(run), "--split", "validation", "-o",
                     str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "index,prediction_price,prediction_age,true_price,true_age"


def test_class_weight_takes_the_datas_class_names(tmp_path: Path):
    """{lux: 3} on a CSV of text labels trains exactly as {1: 3} (lux is class 1, the labels
    sorted); a name the data lacks is a data error naming the classes."""
    rng = np.random.default_rng(2)
    write_csv(tmp_path / "t.csv", ["a", "b", "grade"],
              [[*rng.normal(size=2).round(3), ["cheap", "lux", "mid"][i % 3]] for i in range(30)])
    histories = []
    for weights in ("{lux: 3.0}", "{1: 3.0}", "{'1': 3.0}"):
        work = tmp_path / f"w{len(histories)}"
        work.mkdir()
        config = write_config(tmp_path, "train: t.csv\ntargets: grade\n", WEIGHTED, seed=1,
                              extra=f"fit:\n  epochs: 2\n  batch_size: 8\n  class_weight: "
                                    f"{weights}\n", file=f"c{len(histories)}.yaml")
        result = nntrain("fit", str(config), "-q", cwd=work)
        assert result.exit_code == 0, result.output
        histories.append(_history(work))
    assert histories[0] == histories[1] == histories[2]
    config = write_config(tmp_path, "train: t.csv\ntargets: grade\n", WEIGHTED,
                          extra="fit:\n  class_weight: {posh: 3.0}\n", file="bad.yaml")
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 2
    assert "fit.class_weight: no class named 'posh'; the classes are cheap, lux, mid" in \
        result.output
    assert not (tmp_path / "runs").exists()


def test_none_and_na_are_categories_in_text_columns(tmp_path: Path):
    """Markers like NA are missing values among numbers only: in a text column, "None" (no
    damage) or "NA" (North America) are a category or a class like any other."""
    rows = [[1.0, ["None", "NA", "EU"][i % 3], ["None", "Minor", "Major"][i % 3]]
            for i in range(9)]
    write_csv(tmp_path / "t.csv", ["a", "region", "damage"], rows)
    ds, _ = load(tmp_path, "train: t.csv\ntargets: damage\ncategorical: [region]\n",
                 classifier(4, 3))
    assert ds.class_names == {"dense": ["Major", "Minor", "None"]}
    np.testing.assert_array_equal(y_of(ds.train), [2, 1, 0] * 3)
    np.testing.assert_array_equal(x_of(ds.train)[:3, 1:], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_checking_wide_float64_data_holds_a_small_part_of_it_at_a_time(tmp_path: Path):
    """The NaN/infinity/float32-range check over a memory-mapped file works block by block,
    blocks of a bounded size however wide the rows: a 128 MiB float64 file is checked with a
    few MiB of temporaries, not copies of the file."""
    import tracemalloc

    from nntrain.data.sources import check_arrays

    wide = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64,
                                     shape=(4096, 4096))
    wide[:] = 1.0
    wide[-1, -1] = 1e39  # past float32's range: found in the last block
    np.savez(tmp_path / "tiny.npz", x=np.zeros((2, 4096), np.float32), y=np.zeros(2))
    _, setup = load(tmp_path, "train: tiny.npz\n", regressor(4096))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="1 NaN or infinite values"):
            check_arrays(ArraySet({"input": np.load(tmp_path / "x.npy", mmap_mode="r")}),
                         setup.io, "input x.npy", targets=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # blocks of 64 MiB: two boolean temporaries of 8 MiB (one block of the whole file: 32 MiB)
    assert peak < 24 * 2**20, peak / 2**20
