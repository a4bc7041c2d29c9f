"""Nothing let in: bad data, bad inputs, incomplete or mismatched run directories and unknown
options each get one message (what, where, the fix), exit 2, no traceback (`--debug` shows
one), and leave nothing half-written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from clirunner import nntrain
from safetensors.numpy import load_file

from nntrain.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"
CLASSIFIER = """name: bad_input
seed: 0
data:
  train: d.npz
model:
  input: [2]
  layers:
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
fit: {epochs: 2, batch_size: BATCH}
"""
GOOD_X, GOOD_Y = np.zeros((4, 2), np.float32), np.array([0, 1, 2, 0])


def _rejected(result, *expected: str) -> None:
    """One clear message: exit 2, `error: what/where`, `hint: the fix`, no traceback."""
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert output.startswith("error: "), output
    assert "\nhint: " in output, output
    for text in expected:
        assert text in output, (text, output)


def _classifier(folder: Path, x: np.ndarray, y: np.ndarray, batch: int = 8) -> Path:
    np.savez(folder / "d.npz", x=x, y=y)
    config = folder / "c.yaml"
    config.write_text(CLASSIFIER.replace("BATCH", str(batch)))
    return config


BAD_DATA = {
    "wrong shape": (np.zeros((4, 3), np.float32), GOOD_Y,
                    ["train data (d.npz): input 'input' has examples of shape (3,), the model "
                     "expects (2,)"]),
    "text inputs": (np.full((4, 2), "a"), GOOD_Y,
                    ["train data (d.npz): input 'input' has dtype <U1; expected numbers"]),
    "complex inputs": (np.zeros((4, 2), np.complex64), GOOD_Y, ["has dtype complex64"]),
    "text labels": (GOOD_X, np.array(["a", "b", "c", "a"]),
                    ["train data (d.npz): targets of 'dense' have dtype <U1; expected numbers"]),
    "labels outside the classes": (GOOD_X, np.array([0, 1, 5, 0]),
                                   ["labels of 'dense' range over 0..5, but the output has 3 "
                                    "classes (0..2)"]),
    "negative labels": (GOOD_X, np.array([0, -1, 2, 0]), ["range over -1..2"]),
    "empty dataset": (np.zeros((0, 2), np.float32), np.zeros(0, int),
                      ["train data (d.npz) is empty"]),
    "fractional labels": (GOOD_X, np.array([0, 1.5, 2, 0]), [
        "targets of 'dense' must be class indices (integers), found 1.5", "for values use"]),
    "NaN input": (np.array([[0, np.nan]] * 4, np.float32), GOOD_Y,
                  ["input 'input' has 4 NaN or infinite values"]),
    "infinite input": (np.array([[0, np.inf]] * 4, np.float32), GOOD_Y,
                       ["input 'input' has 4 NaN or infinite values"]),
    "inputs past float32's range": (np.array([[0, 1e39]] * 4), GOOD_Y,
                                    ["input 'input' has 4 NaN or infinite values (or past "
                                     "float32's ±3.4e38)"]),
    "targets past float32's range": (GOOD_X, np.array([0, 1, -1e300, 0]), [
        "targets of 'dense' hold 1 NaN or infinite values (or past float32's ±3.4e38)"]),
    "NaN targets": (GOOD_X, np.array([0, np.nan, 2, 0]), [
        "train data (d.npz): targets of 'dense' hold 1 NaN or infinite values",
        "give every example a finite target"]),
    "fewer labels than inputs": (GOOD_X, GOOD_Y[:3], [
        "the arrays have different numbers of rows: 'x' 4, 'y' 3"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_is_refused_before_a_run_exists(tmp_path: Path, case: str):
    x, y, expected = BAD_DATA[case]
    config = _classifier(tmp_path, x, y)
    _rejected(nntrain("fit", str(config), cwd=tmp_path), *expected)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError):  # --debug: the traceback, for a bug report
        nntrain("--debug", "fit", str(config), cwd=tmp_path)


def test_a_batch_larger_than_the_dataset_is_one_batch(tmp_path: Path):
    config = _classifier(tmp_path, GOOD_X, GOOD_Y, batch=64)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/*/*"))
    arrays = load_file(str(run / "checkpoints" / "last" / "arrays.safetensors"))
    assert int(arrays["step"]) == 2  # two epochs of one step each


# metrics that cannot score these targets: once a JAX traceback, or figures without meaning
BAD_METRICS = {
    "top_k_categorical_accuracy": ("needs one-hot targets of shape (3,)",
                                   "use sparse_top_k_categorical_accuracy"),
    "categorical_accuracy": ("needs one-hot targets of shape (3,)",
                             "use sparse_categorical_accuracy"),
    "binary_accuracy": ("needs targets of the output's shape (3,)", "for class indices use"),
    "mae": ("needs targets of the output's shape (3,)", "for class indices use"),
}


@pytest.mark.parametrize("metric", list(BAD_METRICS))
def test_metrics_that_cannot_score_the_targets_are_refused(tmp_path: Path, metric: str):
    config = _classifier(tmp_path, GOOD_X, GOOD_Y)
    text = config.read_text().replace("compile:\n", f"compile:\n  metrics: [{metric}]\n")
    config.write_text(text)
    _rejected(nntrain("fit", str(config), cwd=tmp_path),
              f"train data (d.npz): metric {metric} of 'dense'", *BAD_METRICS[metric])
    assert not (tmp_path / "runs").exists()


def test_metrics_that_fit_one_hot_targets_train(tmp_path: Path):
    config = _classifier(tmp_path, GOOD_X, np.eye(3, dtype=np.float32)[GOOD_Y])
    config.write_text(config.read_text().replace(
        "  loss: sparse_categorical_crossentropy\n",
        "  loss: categorical_crossentropy\n  metrics: [accuracy, categorical_accuracy, "
        "top_k_categorical_accuracy, mae]\n"))
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    sparse = config.read_text().replace("top_k_categorical_accuracy", "sparse_categorical_accuracy")
    config.write_text(sparse)
    _rejected(nntrain("fit", str(config), cwd=tmp_path),
              "metric sparse_categorical_accuracy of 'dense' needs class indices",
              "use categorical_accuracy")


# -- run directories that are incomplete or made for another model ------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny run, and one of a wider model (its checkpoints fit no other)."""
    work = tmp_path_factory.mktemp("runs")
    wide = work / "wide.yaml"
    wide.write_text(TINY.read_text().replace("units: 16", "units: 24"))
    made = {}
    for name, config in (("tiny", TINY), ("wide", wide)):
        folder = work / name
        folder.mkdir()
        assert nntrain("fit", str(config), "-q", cwd=folder).exit_code == 0
        made[name] = next(folder.glob("runs/*/*"))
    return made


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


COMMANDS = {
    "evaluate": ["evaluate", "{run}"],
    "predict": ["predict", "{run}", "--limit", "2"],
    # to train longer: a finished run resumed for no more epochs reads nothing
    "resume": ["fit", "--resume", "{run}", "-q", "--epochs", "5"],
}
DAMAGE = {
    "no config.yaml": (["config.yaml"], {c: ["{run} has no config.yaml", "copy config.yaml"]
                                         for c in COMMANDS}),
    "no run.json": (["run.json"], {c: ["{run} looks like a run directory but has no run.json"]
                                   for c in COMMANDS}),
    "no checkpoints": (["checkpoints"], {
        "evaluate": ["no checkpoint at {run}/checkpoints/best or {run}/checkpoints/last",
                     "restore them, or train again"],
        "predict": ["no checkpoint at {run}/checkpoints/best or {run}/checkpoints/last"],
        "resume": ["{run} recorded 4 finished epochs but has no checkpoint at "
                   "{run}/checkpoints/last"]}),
    "no best checkpoint": (["checkpoints/best"], {
        "evaluate": ["no checkpoint at {run}/checkpoints/best, though metrics.json records a "
                     "best epoch", "or use --checkpoint last"],
        "predict": ["no checkpoint at {run}/checkpoints/best, though"],
        "resume": None}),  # resuming without the best weights is the documented way on
    "run.json not an object": ([], {c: ["{run}/run.json: not a JSON object"]
                                    for c in COMMANDS}),
    "another model's checkpoints": (["checkpoints"], {
        c: ["{run}/checkpoints/", "dense/bias has shape (24,) in the checkpoint but (16,) in "
            "the model", "the checkpoint was made for a different model"]
        for c in COMMANDS}),
}


@pytest.mark.parametrize(("damage", "command"), [
    (damage, command) for damage in DAMAGE for command in COMMANDS
    if DAMAGE[damage][1][command] is not None])
def test_incomplete_or_mismatched_run_directories(tmp_path: Path, runs, damage: str,
                                                  command: str):
    run = tmp_path / "tiny_mlp" / "20260101-000000"
    shutil.copytree(runs["tiny"], run)
    removed, expected = DAMAGE[damage]
    for name in removed:
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if damage == "another model's checkpoints":
        shutil.copytree(runs["wide"] / "checkpoints", run / "checkpoints")
    if damage == "run.json not an object":
        (run / "run.json").write_text("[1]\n")
    before = _snapshot(run)
    args = [a.format(run=run) for a in COMMANDS[command]]
    _rejected(nntrain(*args, cwd=tmp_path), *(e.format(run=run) for e in expected[command]))
    assert _snapshot(run) == before  # nothing written, nothing half-written
    with pytest.raises(UserError):
        nntrain("--debug", *args, cwd=tmp_path)


WRONG_TYPES = [
    ("run.json", "config_dir", None, ["evaluate", "predict", "resume"]),
    ("run.json", "data", 5, ["evaluate", "predict", "runs show"]),
    ("run.json", "epochs_completed", "x", ["resume"]),
    ("metrics.json", "evaluations", 5, ["evaluate"]),
]


@pytest.mark.parametrize(("name", "key", "value", "commands"), WRONG_TYPES)
def test_run_files_holding_wrong_types_are_named_as_damaged(tmp_path: Path, runs, name, key,
                                                            value, commands):
    run = tmp_path / "tiny_mlp" / "20260101-000000"
    shutil.copytree(runs["tiny"], run)
    data = json.loads((run / name).read_text())
    (run / name).write_text(json.dumps({**data, key: value}))
    before = _snapshot(run)
    for command in commands:
        args = {"resume": ["fit", "--resume", str(run), "-q"],
                "runs show": ["runs", "show", str(run)]}.get(command, [command, str(run)])
        result = nntrain(*args, cwd=tmp_path)
        if command == "runs show":  # a listing shows what it can, and says what is damaged
            assert result.exit_code == 0 and "Traceback" not in result.output
            assert "damaged" in result.output, result.output
        else:
            _rejected(result, f"cannot read {run / name}: '{key}' holds "
                      f"{json.dumps(value)}", "restore " + name)
    assert _snapshot(run) == before


BAD_PREDICT_INPUT = {
    "wrong shape": (np.zeros((2, 5, 5), np.float32),
                    "input x.npy: input 'input' has examples of shape (5, 5), the model "
                    "expects (4, 4)"),
    "flattened": (np.zeros((3, 16), np.float32),
                  "hint: reshape the array to (N, 4, 4): x.reshape(-1, 4, 4)"),
    "fewer values per example": (np.zeros((6, 8), np.float32),
                                 "hint: give an array of shape (N, 4, 4)"),
    "one example": (np.zeros((4, 4), np.float32),
                    "hint: one example needs a batch axis: save it as shape (1, 4, 4)"),
    "one value": (np.float32(3), "the input 'input' is a single value, not examples"),
    "NaN": (np.full((2, 4, 4), np.nan, np.float32), "has 32 NaN or infinite values"),
    "past float32": (np.full((2, 4, 4), -4e38), "has 32 NaN or infinite values (or past "
                     "float32's ±3.4e38)"),
    "text": (np.full((2, 4, 4), "a"), "has dtype <U1; expected numbers"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT_INPUT))
def test_bad_predict_input(tmp_path: Path, runs, case: str):
    array, expected = BAD_PREDICT_INPUT[case]
    np.save(tmp_path / "x.npy", array)
    out = tmp_path / "out.csv"
    result = nntrain("predict", str(runs["tiny"]), "x.npy", "--output", str(out), cwd=tmp_path)
    _rejected(result, expected)
    assert not out.exists()


def _npz_with(path: Path, **members: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_unreadable_npz_files_are_named_with_the_fix(tmp_path: Path, runs):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((2, 4, 4), np.float32))
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:60])
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    _npz_with(tmp_path / "empty.npz")
    for name, expected in [("cut.npz", "cannot read cut.npz"),
                           ("objects.npz", "cannot read objects.npz: object arrays need "
                                           "pickle, which nntrain never uses"),
                           ("empty.npz", "no arrays for inputs input (it holds none)")]:
        result = nntrain("predict", str(runs["tiny"]), name, cwd=tmp_path)
        _rejected(result, expected, "numpy.savez(FILE, input=...)")
    # a member that is not an array (notes beside the data) is passed over
    buffer = tmp_path / "x.npy"
    np.save(buffer, np.zeros((2, 4, 4), np.float32))
    _npz_with(tmp_path / "notes.npz", **{"x.npy": buffer.read_bytes(), "notes.txt": b"hi"})
    result = nntrain("predict", str(runs["tiny"]), "notes.npz", cwd=tmp_path)
    assert result.exit_code == 0, result.output


def test_an_npz_of_only_targets_is_not_taken_for_inputs(tmp_path: Path, runs):
    """One array of any name is the one input, unless it is named as the targets are."""
    np.savez(tmp_path / "labels.npz", y=np.zeros((2, 4, 4), np.float32))
    _rejected(nntrain("predict", str(runs["tiny"]), "labels.npz", cwd=tmp_path),
              "labels.npz holds only 'y', the name of the targets, not of inputs",
              "save the inputs as x (numpy.savez(FILE, x=...)) or as input")
    np.savez(tmp_path / "arrays.npz", np.zeros((2, 4, 4), np.float32))  # arr_0
    assert nntrain("predict", str(runs["tiny"]), "arrays.npz", cwd=tmp_path).exit_code == 0
    _rejected(nntrain("predict", str(runs["tiny"]), "missing.npy", cwd=tmp_path),
              "input file not found: missing.npy", "check the path")


def test_inputs_of_different_lengths_are_refused(tmp_path: Path):
    two = (
        "name: two\ndata: {train: d.npz}\n"
        "model:\n  inputs: {a: {shape: [2]}, b: {shape: [3]}}\n"
        "  layers:\n    - concatenate: {inputs: [a, b]}\n    - dense: 1\n"
        "compile: {loss: mse}\nfit: {epochs: 1, batch_size: 4}\n")
    (tmp_path / "c.yaml").write_text(two)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", a=rng.random((8, 2)), b=rng.random((8, 3)), y=rng.random(8))
    assert nntrain("fit", "c.yaml", "-q", cwd=tmp_path).exit_code == 0
    np.savez(tmp_path / "p.npz", a=rng.random((5, 2)), b=rng.random((4, 3)))
    _rejected(nntrain("predict", "two", "p.npz", cwd=tmp_path),
              "the inputs have different numbers of rows: 'a' 5, 'b' 4")


def test_predict_input_with_no_examples(tmp_path: Path, runs):
    np.save(tmp_path / "x.npy", np.zeros((0, 4, 4), np.float32))
    _rejected(nntrain("predict", str(runs["tiny"]), "x.npy", cwd=tmp_path),
              "input x.npy is empty")


@pytest.mark.parametrize("args, expected", [
    (["fit", str(TINY), "--epoch", "3"], "No such option: --epoch"),
    (["evaluate", "latest", "--bogus"], "No such option: --bogus"),
    (["predict", "latest", "--chekpoint", "last"], "No such option: --chekpoint"),
    (["fit", str(TINY), "--epochs", "many"], "Invalid value for '--epochs'"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_unknown_or_malformed_options(tmp_path: Path, args, expected):
    result = nntrain(*args, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Try 'nntrain" in result.output  # where to look: the command's --help
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("assignment, expected", [
    # the place is the --set that put the value there, not the file's old value
    ("model.input=[0]", "--set model.input=[0]: model.input[0]: input should be greater than 0"),
    ("model.layers.1.dense=null",
     "--set model.layers.1.dense=null: model.layers[1].dense: missing required key 'units'"),
    ("a..b=1", "--set a..b=1: a: unknown key 'a'"),
    # JAX takes a 64-bit signed seed; a larger one crashed fit
    ("seed=18446744073709551616", "--set seed=18446744073709551616: seed: input should be less "
     "than 9223372036854775808"),
])
def test_bad_overrides_are_named_by_their_set(tmp_path: Path, assignment: str, expected: str):
    result = nntrain("fit", str(TINY), "--set", assignment, cwd=tmp_path)
    _rejected(result, expected)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("metric", ["{precision: {class_id: 3}}", "{recall: {top_k: 4}}"])
def test_metric_arguments_past_the_outputs_units_are_refused(tmp_path: Path, metric: str):
    """JAX clamps an index past the last class: class 3 of 3 would score class 2 silently."""
    config = _classifier(tmp_path, GOOD_X, np.eye(3, dtype=np.float32)[GOOD_Y])
    config.write_text(config.read_text().replace(
        "  loss: sparse_categorical_crossentropy\n",
        f"  loss: categorical_crossentropy\n  metrics: [{metric}]\n"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "is past the output's 3 units" in result.output



def test_from_logits_on_a_softmax_output_is_refused(tmp_path: Path):
    """Keras on JAX would apply the softmax twice and train on a wrong loss."""
    config = _classifier(tmp_path, GOOD_X, GOOD_Y)
    config.write_text(config.read_text().replace(
        "  loss: sparse_categorical_crossentropy\n",
        "  loss: {sparse_categorical_crossentropy: {from_logits: true}}\n"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    _rejected(result, "compile.loss.sparse_categorical_crossentropy.from_logits",
              "output 'dense' ends in softmax, so its values are probabilities, not logits")
    config.write_text(config.read_text().replace("activation: softmax", "activation: linear"))
    assert nntrain("validate", str(config), cwd=tmp_path).exit_code == 0


def test_an_output_place_the_system_refuses_is_a_clear_error(tmp_path: Path, runs):
    (tmp_path / "a-file").write_text("")
    _rejected(nntrain("fit", str(TINY), "--runs-dir", str(tmp_path / "a-file"), "-q"),
              "a-file/tiny_mlp: Not a directory", "--runs-dir")
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.float32))
    out = tmp_path / "new" / "folder" / "p.csv"  # made, as --show and plot make theirs
    result = nntrain("predict", str(runs["tiny"]), "x.npy", "--output", str(out), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 3


def test_evaluate_of_a_read_only_run_still_prints_its_figures(runs, monkeypatch):
    from nntrain import read_back

    def read_only(path, data):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(read_back, "atomic_write_json", read_only)
    result = nntrain("evaluate", str(runs["tiny"]), "--json")
    assert result.exit_code == 0, result.output
    assert "not recorded in" in result.output and "Read-only file system" in result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert set(figures) == {"loss", "accuracy"}


def test_plot_of_a_history_without_epochs_names_the_file(tmp_path: Path, runs):
    run = tmp_path / "tiny_mlp" / "20260101-000000"
    shutil.copytree(runs["tiny"], run)
    (run / "history.csv").write_text("loss\n0.5\n")
    _rejected(nntrain("plot", str(run), "-o", str(tmp_path / "p.png"), cwd=tmp_path),
              f"{run / 'history.csv'}:2: no epoch number", "restore history.csv")
    assert not (tmp_path / "p.png").exists()


def test_an_output_path_that_is_a_folder_is_named_as_given(tmp_path: Path, runs):
    (tmp_path / "out.csv").mkdir()
    result = nntrain("predict", str(runs["tiny"]), "--split", "test", "-o", "out.csv",
                     cwd=tmp_path)
    _rejected(result, "--output out.csv is a folder: the output is written as a file of its own")
    assert ".tmp" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def _pipes_and_devices(folder: Path) -> None:
    import os

    for name in ("pipe.npz", "pipe.npy"):
        os.mkfifo(folder / name)
    (folder / "zeros.csv").symlink_to("/dev/zero")


@pytest.mark.parametrize(("command", "says"), [
    (["fit", str(TINY), "--set", "data.dataset=null", "--set", "data.train=pipe.npz"],
     "data.train: {}/pipe.npz is a pipe, a device or a socket, not a file"),
    (["fit", str(TINY), "--set", "data.dataset=null", "--set", "data.train=zeros.csv"],
     "data.train: {}/zeros.csv is a pipe, a device or a socket, not a file"),
    (["validate", "/dev/zero"], "/dev/zero is a device or a socket, not a config file"),
    (["predict", "RUN", "pipe.npy"], "input pipe.npy is a pipe, a device or a socket"),
])
def test_a_pipe_or_a_device_is_refused_not_read(tmp_path: Path, runs, command, says):
    """Opening a FIFO waits for a writer forever and /dev/zero never ends: a path to either
    is refused by its kind before it is opened (a child process, so a regression hangs
    only until the timeout)."""
    import os
    import subprocess
    import sys

    _pipes_and_devices(tmp_path)
    command = [str(runs["tiny"]) if word == "RUN" else word for word in command]
    done = subprocess.run([sys.executable, "-m", "nntrain", *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr
    assert says.format(tmp_path) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def _refused_training_data(train: Path, cwd: Path) -> str:
    """`nntrain fit` of the tiny model on `train`: exit 2, no run made; what it said."""
    result = nntrain("fit", str(TINY), "--set", "data.dataset=null", "--set",
                     f"data.train={train}", cwd=cwd)
    assert result.exit_code == 2, result.output
    assert not (cwd / "runs").exists()
    return " ".join(result.output.split())


def test_an_array_larger_than_memory_is_a_data_error(tmp_path: Path):
    """An .npz member whose header declares 1.4 PiB: numpy's MemoryError, said as bad data."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**14, 4)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue())
    said = _refused_training_data(tmp_path / "huge.npz", tmp_path)
    assert f"cannot read {tmp_path / 'huge.npz'}: Unable to allocate" in said
    assert "larger than this machine's memory" in said


def test_a_config_read_from_a_pipe_validates(tmp_path: Path):
    """`nntrain validate <(generate-config)`: a pipe with a writer is read once, to its end."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "nntrain", "validate", "/dev/stdin"],
                          input=TINY.read_text(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "is valid: model 'tiny_mlp'" in " ".join(done.stdout.split())


def test_a_npy_file_cut_short_in_a_folder_is_said_so(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "x.npy", np.zeros((40, 4, 4), np.float32))
    np.save(data / "y.npy", np.zeros(40, np.int64))
    whole = (data / "x.npy").read_bytes()
    (data / "x.npy").write_bytes(whole[: len(whole) // 2])  # a copy interrupted halfway
    said = _refused_training_data(data, tmp_path)
    assert f"cannot read {data / 'x.npy'}: it holds fewer bytes than its header declares" in said
    assert "the file was cut short" in said
