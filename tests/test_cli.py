"""The CLI as a user runs it: fit, evaluate, predict, summary, validate, resume, errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from clirunner import nntrain
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"




def only_run(root: Path) -> Path:
    runs = sorted(p.parent for p in root.glob("runs/*/*/run.json"))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """One tiny run shared by the read-back tests."""
    work = tmp_path_factory.mktemp("fit")
    result = nntrain("fit", str(TINY), cwd=work)
    assert result.exit_code == 0, result.output
    return only_run(work)


def test_fit_leaves_a_complete_run_directory(fitted: Path):
    for name in ("config.yaml", "run.json", "summary.txt", "history.csv", "metrics.json",
                 "history.png", "checkpoints/last/arrays.safetensors",
                 "checkpoints/best/checkpoint.json"):
        assert (fitted / name).exists(), name
    info = json.loads((fitted / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["seed"] == 1
    assert info["data"]["train"]["examples"] == 500
    assert info["data"]["validation"]["examples"] == 100
    rows = list(csv.DictReader((fitted / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learned
    assert "Total params: 323" in (fitted / "summary.txt").read_text()
    assert (fitted / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_ends_with_the_figures_side_by_side(tmp_path: Path):
    result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["best_epoch"]
    row = list(csv.DictReader((run / "history.csv").open()))[best - 1]
    lines = result.output.splitlines()
    assert f"4 epochs, best epoch {best} (val_loss {float(row['val_loss']):.4f})" in result.output
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", str(best)])
    assert lines[header].split()[2:] == ["train", "validation", "test"]
    for name, line in zip(("loss", "accuracy"), lines[header + 2:header + 4], strict=True):
        expected = [row[name], row[f"val_{name}"], metrics["test"][name]]
        assert line.split() == [name, *(f"{float(v):.4f}" for v in expected)]
    assert lines[header + 4] == f"run: {run.relative_to(tmp_path)}"


def test_evaluate_json_matches_the_test_figures_fit_reported(fitted: Path):
    reported = json.loads((fitted / "metrics.json").read_text())["test"]
    result = nntrain("evaluate", str(fitted), "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == {"loss", "accuracy"}
    for name in figures:
        assert round(figures[name], 4) == round(reported[name], 4)
    evaluations = json.loads((fitted / "metrics.json").read_text())["evaluations"]
    assert evaluations[-1]["split"] == "test" and evaluations[-1]["checkpoint"] == "best"


def test_evaluate_of_a_run_without_best_weights_says_it_used_the_last(tmp_path: Path):
    result = nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    # as a run stopped inside its first epoch: no best epoch yet, no best checkpoint
    shutil.rmtree(run / "checkpoints" / "best")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "best_epoch": None}))
    result = nntrain("evaluate", str(run))
    assert result.exit_code == 0, result.output
    assert "last weights (epoch 1; the run keeps no best checkpoint)" in \
        " ".join(result.output.split())
    evaluation = json.loads((run / "metrics.json").read_text())["evaluations"][-1]
    assert evaluation["checkpoint"] == "last"


def test_evaluate_finds_runs_by_name_and_latest(fitted: Path):
    work = fitted.parents[2]
    for spec in ("runs/tiny_mlp", "latest", "tiny_mlp"):
        result = nntrain("evaluate", spec, "--split", "validation", cwd=work)
        assert result.exit_code == 0, (spec, result.output)
        assert "accuracy" in result.output
    missing = nntrain("evaluate", "runs/nope", cwd=work)
    assert missing.exit_code == 2
    assert "no run found" in missing.output and "tiny_mlp" in missing.output


def test_predict_writes_csv_npy_json(fitted: Path, tmp_path: Path):
    x = np.random.default_rng(0).standard_normal((5, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for suffix in ("csv", "npy", "json"):
        out = tmp_path / f"pred.{suffix}"
        result = nntrain("predict", str(fitted), str(tmp_path / "x.npy"), "--output", str(out))
        assert result.exit_code == 0, result.output
    probs = np.load(tmp_path / "pred.npy")
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    rows = list(csv.DictReader((tmp_path / "pred.csv").open()))
    assert len(rows) == 5
    assert [int(r["class"]) for r in rows] == list(probs.argmax(1))
    records = json.loads((tmp_path / "pred.json").read_text())
    assert records[0]["probability"] == pytest.approx(probs[0].max(), rel=1e-6)
    # a folder of .npy files, as training reads them
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "x.npy", x)
    result = nntrain("predict", str(fitted), str(tmp_path / "folder"), "--output",
                     str(tmp_path / "folder.npy"))
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "folder.npy"), probs, rtol=1e-6)
    # a split's predictions carry the true classes, as its table does
    out = tmp_path / "split.csv"
    result = nntrain("predict", str(fitted), "--split", "test", "--limit", "4", "--output",
                     str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    table = nntrain("predict", str(fitted), "--split", "test", "--limit", "4")
    trues = [line.split()[-2] for line in table.output.splitlines() if line[:3] == "│  "
             or line[:2] == "│ "][:4]
    assert [r["true_class"] for r in rows] == [r["true_label"] for r in rows] == trues


def test_predict_split_table_and_wrong_shape(fitted: Path, tmp_path: Path):
    x = np.random.default_rng(0).standard_normal((25, 4, 4)).astype(np.float32)
    np.save(tmp_path / "many.npy", x)
    shown = nntrain("predict", str(fitted), str(tmp_path / "many.npy"))
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith("│")]
    assert len(rows) == 20  # a screenful, then where the rest are
    said = " ".join(shown.output.split())
    assert "the first 20 of 25 examples (--limit N for more, --output FILE for all), from " \
        "the best weights (epoch " in said
    every = nntrain("predict", str(fitted), str(tmp_path / "many.npy"), "--limit", "25")
    assert len([line for line in every.output.splitlines() if line.startswith("│")]) == 25
    assert "the first" not in every.output
    result = nntrain("predict", str(fitted), "--split", "test", "--limit", "3", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "#2 (probability)" in result.output and "true" in result.output
    # more ranks than the 3 classes: three columns, and the true label stays in its column
    result = nntrain("predict", str(fitted), "--split", "test", "--limit", "3", "--top", "5")
    assert "#3 (probability)" in result.output and "#4" not in result.output
    assert "…" not in result.output  # nothing cut at 80 columns
    # a file holds every class's probability: ranking them there is refused, not ignored
    ranked = nntrain("predict", str(fitted), "--split", "test", "--top", "2", "--output",
                     str(tmp_path / "p.csv"))
    assert ranked.exit_code == 2 and not (tmp_path / "p.csv").exists()
    assert "--top 2 ranks classes in the table; --output writes every class's probability" \
        in " ".join(ranked.output.split())
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5), np.float32))
    bad = nntrain("predict", str(fitted), str(tmp_path / "bad.npy"))
    assert bad.exit_code == 2
    assert "(5, 5)" in bad.output and "(4, 4)" in bad.output
    assert "Traceback" not in bad.output


@pytest.mark.parametrize(("loss", "units", "metric"), [
    ("sparse_categorical_crossentropy", 3, "accuracy"),
    ("binary_crossentropy", 1, "{binary_accuracy: 0}")])  # the logit of probability 0.5
def test_a_model_trained_on_logits_predicts_probabilities(tmp_path: Path, loss: str,
                                                           units: int, metric: str):
    result = nntrain("fit", str(TINY), "-q", "--epochs", "2",
                     "--set", f"compile.loss={{{loss}: {{from_logits: true}}}}",
                     "--set", f"compile.metrics=[{metric}]",
                     "--set", f"model.layers.3.dense={{units: {units}}}",
                     "--set", f"data.synthetic.classes={max(units, 2)}", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "p.csv"
    result = nntrain("predict", str(only_run(tmp_path)), "--split", "test", "--output",
                     str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    probabilities = np.array([[float(r[f"p_{c}"]) for c in range(max(units, 2))]
                              for r in rows])
    assert (probabilities >= 0).all() and (probabilities <= 1).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert [int(r["class"]) for r in rows] == list(probabilities.argmax(1))
    # the accuracy evaluate reports is the share of the classes predict gives that are right
    result = nntrain("evaluate", str(only_run(tmp_path)), "--split", "test", "--json")
    accuracy = next(v for k, v in json.loads(result.output).items() if k.endswith("accuracy"))
    assert accuracy == pytest.approx(np.mean([r["class"] == r["true_class"] for r in rows]))


def test_predict_top_of_a_regression_model_is_refused(tmp_path: Path):
    result = nntrain("fit", str(TINY), "-q", "--epochs", "1", "--set", "compile.loss=mse",
                     "--set", "compile.metrics=[]", "--set", "data.synthetic.classes=0",
                     "--set", "model.layers.3.dense={units: 1}", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    result = nntrain("predict", str(only_run(tmp_path)), "--split", "test", "--top", "3")
    assert result.exit_code == 2
    assert "--top 3 ranks the classes of a softmax output; this model's output is not class " \
        "probabilities" in " ".join(result.output.split())


def test_predict_top_of_a_sigmoid_classifier_says_why_not(tmp_path: Path):
    result = nntrain("fit", str(TINY), "-q", "--epochs", "1", "--set",
                     "compile.loss=binary_crossentropy", "--set", "compile.metrics=[]",
                     "--set", "data.synthetic.classes=2",
                     "--set", "model.layers.3.dense={units: 1, activation: sigmoid}",
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    result = nntrain("predict", str(only_run(tmp_path)), "--split", "test", "--top", "2")
    assert result.exit_code == 2
    assert "this model's output is one sigmoid probability, whose class the table shows" \
        in " ".join(result.output.split())


def test_invalid_config_exits_2_with_locations_and_creates_nothing(tmp_path: Path):
    text = TINY.read_text().replace("units: 16", "unit: 16").replace("epochs: 4", "epochs: four")
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "2 problems" in result.output
    assert "bad.yaml:12:" in result.output and "did you mean 'units'" in result.output
    assert "fit.epochs" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_summary_and_validate_on_the_textbook_model():
    result = nntrain("summary", str(ROOT / "configs" / "fashion_mlp.yaml"))
    assert result.exit_code == 0, result.output
    for count in ("235,500", "30,100", "1,010", "Total params: 266,610"):
        assert count in result.output
    assert "(None, 300)" in result.output
    result = nntrain("validate", str(ROOT / "configs" / "fashion_mlp.yaml"))
    assert result.exit_code == 0 and "valid" in result.output


def test_validate_finds_a_data_file_that_is_not_there(tmp_path: Path):
    """validate reads no data, but a data file the config names must exist."""
    config = ROOT / "configs" / "housing_mlp.yaml"
    result = nntrain("validate", str(config), "--set", "data.source=nope.csv", cwd=tmp_path)
    assert result.exit_code == 2
    assert f"data.source: file not found: {tmp_path / 'nope.csv'}" in \
        " ".join(result.output.split())
    (tmp_path / "here.csv").write_text("a,b\n1,2\n")  # there, not read
    result = nntrain("validate", str(config), "--set", "data.source=here.csv", cwd=tmp_path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("config", "hint"), [
    ("fashion_mlp.yaml", "fashion_mnist reads its four IDX files from $NNTRAIN_DATA/"),
    ("iris.yaml", "iris is built in and reads no file: drop source"),
])
def test_a_source_the_dataset_would_not_read_is_refused(tmp_path: Path, config, hint):
    """data.source is a local copy of mnist's or california_housing's file: given to another
    dataset it would be ignored, and the run would train on other data without a word."""
    (tmp_path / "mine.npz").write_bytes(b"")
    result = nntrain("fit", str(ROOT / "configs" / config), "--set", "data.source=mine.npz",
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "data: source" in message and "would not be read" in message and hint in message
    assert not (tmp_path / "runs").exists()


def test_set_overrides_and_shortcuts(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--epochs", "2", "--set", "fit.batch_size=50",
                     "--set", "model.layers.1.dense.units=8", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 2
    saved = (run / "config.yaml").read_text()
    assert "batch_size: 50" in saved and "units: 8" in saved


def test_early_stopping_stops_and_restores_best(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--epochs", "10", "--set",
                     "fit.callbacks.0.early_stopping.min_delta=10", "--set",
                     "fit.callbacks.0.early_stopping.patience=1", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and "early stopping after epoch 2" in info["stop_reason"]
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 2
    # an ended run is not an interrupted one: --resume leaves it as it is
    before = (run / "history.csv").read_text()
    resumed = nntrain("fit", "--resume", str(run), "--epochs", "20", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert "ended by early stopping after epoch 2: nothing to resume" in \
        " ".join(resumed.output.split())
    assert (run / "history.csv").read_text() == before


def test_non_finite_loss_fails_with_exit_1(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--set", "compile.optimizer={sgd: 1.0e30}", "--set",
                     "compile.loss=mse", "--set", "compile.metrics=[]", "--set",
                     "data.synthetic.classes=0", "--set",
                     "model.layers.3.dense.activation=linear", cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert "loss became" in result.output and "epoch 1" in result.output
    run = only_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["stop_reason"].startswith("loss became") and "epoch 1" in info["stop_reason"]
    shown = nntrain("runs", "show", str(run), cwd=tmp_path)
    assert "stop reason" in shown.output and "loss became" in shown.output
    evaluated = nntrain("evaluate", str(run), cwd=tmp_path)
    assert evaluated.exit_code == 2
    assert "failed before it finished an epoch (loss became" in evaluated.output
    assert "no weights to evaluate" in evaluated.output


def test_a_failed_fit_ends_its_json_log_with_the_cause(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--log-format", "json", "--set",
                     "compile.optimizer={sgd: 1.0e30}", "--set", "compile.loss=mse", "--set",
                     "compile.metrics=[]", "--set", "data.synthetic.classes=0", "--set",
                     "model.layers.3.dense.activation=linear", cwd=tmp_path)
    assert result.exit_code == 1
    end = json.loads(result.stdout.strip().splitlines()[-1])
    assert end["event"] == "end" and end["status"] == "failed"
    assert end["stop_reason"].startswith("loss became")
    assert {"epochs", "monitor", "best_value", "best_epoch", "test"} <= set(end)


def test_missing_dataset_names_the_package(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", "")
    monkeypatch.setenv("NNTRAIN_DATASET_MIRROR", "http://127.0.0.1:9/")
    result = nntrain("fit", str(ROOT / "configs" / "fashion_mlp.yaml"), cwd=tmp_path)
    assert result.exit_code == 2
    assert "dataset-fashion-mnist" in result.output
    assert not (tmp_path / "runs").exists()


def test_bad_cli_arguments_exit_2(fitted: Path):
    assert nntrain("evaluate", str(fitted), "--split", "tset").exit_code == 2
    assert nntrain("fit", str(TINY), "--epochs", "0").exit_code == 2
    assert nntrain("fit", "/no/such/config.yaml").exit_code == 2


def test_help_validate_and_summary_do_not_import_jax():
    """Reading a config is quick: no JAX (half a second to import) for these commands."""
    configs = sorted(str(p) for p in [*(ROOT / "configs").glob("*.yaml"),
                                      *(ROOT / "tests" / "configs").glob("*.yaml")])
    commands = [["--help"], *(["validate", c] for c in configs), ["summary", configs[0]]]
    code = ("import sys, json\nfrom nntrain import cli\ncodes = []\n"
            f"for args in {commands!r}:\n"
            "    sys.argv = ['nntrain', *args]\n"
            "    try:\n        cli.main()\n    except SystemExit as e:\n"
            "        codes.append(e.code or 0)\n"
            "print(json.dumps([codes, 'jax' in sys.modules, 'optax' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    codes, jax_loaded, optax_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == [0] * len(commands), out.stdout
    assert out.stdout.count(" is valid: model ") == len(configs)
    assert "Total params" in out.stdout
    assert not jax_loaded and not optax_loaded


def test_validate_builds_only_the_entry_models_a_config_names():
    """Each layer, loss, optimizer... model is built the first time a config names it
    (building all of them took 0.2 s of every start)."""
    code = ("import sys, json\nfrom nntrain import cli\n"
            "from nntrain.config.layers import LAYERS\n"
            "from nntrain.config.compile import OPTIMIZERS\n"
            "before = sorted(LAYERS._entries) + sorted(OPTIMIZERS._entries)\n"
            f"sys.argv = ['nntrain', 'validate', {str(ROOT / 'configs' / 'fashion_mlp.yaml')!r}]\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code or 0\n"
            "print(json.dumps([code, before, sorted(LAYERS._entries),"
            " sorted(OPTIMIZERS._entries)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    code, before, layers, optimizers = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0, out.stdout + out.stderr
    assert before == []
    assert layers == ["dense", "flatten", "rescaling"]
    assert optimizers == ["sgd"]


def _command_paths() -> list[list[str]]:
    import typer

    from nntrain import cli

    paths = [[]]
    for name, command in typer.main.get_command(cli.app).commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "nntrain")
def test_help_names_no_type_for_flags(path: list[str]):
    """Flags take no value: help shows none, typer's own --help and completion flags too."""
    result = nntrain(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and "Show this message and exit." in result.output
    assert "<bool>" not in result.output


def _arrays(run: Path, name: str) -> dict[str, np.ndarray]:
    return load_file(str(run / "checkpoints" / name / "arrays.safetensors"))


def _history(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path):
    config = tmp_path / "resume.yaml"
    config.write_text(
        TINY.read_text()
        .replace("samples: 600", "samples: 12000")
        .replace("epochs: 4", "epochs: 8")
        .replace("patience: 3", "patience: 20")
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    command = [sys.executable, "-m", "nntrain", "fit", str(config), "-q"]
    subprocess.run(command, cwd=whole, check=True, capture_output=True)

    process = subprocess.Popen(command, cwd=killed, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    marker = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(killed.glob("runs/*/*/checkpoints/last/checkpoint.json"))
        if found:
            try:
                if json.loads(found[0].read_text())["epoch"] >= 2:
                    marker = found[0]
                    break
            except (ValueError, OSError):
                pass  # being replaced right now
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker is not None, "the run finished before it could be killed"
    run = only_run(killed)
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    epochs_before = json.loads((run / "checkpoints/last/checkpoint.json").read_text())["epoch"]
    assert epochs_before < 8

    resumed = subprocess.run([sys.executable, "-m", "nntrain", "fit", "--resume", str(run), "-q"],
                             cwd=killed, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    reference = only_run(whole)
    assert _history(run) == _history(reference)
    for name in ("last", "best"):
        a, b = _arrays(run, name), _arrays(reference, name)
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), (name, key)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    shutil.rmtree(tmp_path / "whole")


def test_resume_refuses_a_changed_config_and_shows_the_difference(fitted: Path, tmp_path: Path):
    changed = tmp_path / "changed.yaml"
    changed.write_text(TINY.read_text().replace("units: 16", "units: 32"))
    result = nntrain("fit", str(changed), "--resume", str(fitted))
    assert result.exit_code == 2
    assert "differs from the config the run started with" in result.output
    assert "units: 32" in result.output and "units: 16" in result.output
    same = nntrain("fit", str(TINY), "--resume", str(fitted), "-q")
    assert same.exit_code == 0, same.output  # the unchanged config is accepted
    epochs = yaml.safe_load(TINY.read_text())["fit"]["epochs"]
    longer = tmp_path / "longer.yaml"  # and one that trains longer is followed
    longer.write_text(TINY.read_text().replace(f"epochs: {epochs}", f"epochs: {epochs + 1}"))
    copy = shutil.copytree(fitted, tmp_path / "runs" / "tiny" / fitted.name)  # fitted is shared
    result = nntrain("fit", str(longer), "--resume", str(copy))
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "metrics.json").read_text())["epochs_completed"] == epochs + 1
    assert f"was started with fit.epochs: {epochs}; {longer} trains it to epoch {epochs + 1}" \
        in "".join(result.output.split("\n"))


def test_a_run_moved_elsewhere_resumes_under_its_own_name(tmp_path: Path):
    """A run copied out of runs/<name>/ (to a scratch folder, say) is still the config's run:
    the end of fit names it so, not the folder it now lies in."""
    assert nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    moved = tmp_path / "scratch" / "copy"
    shutil.copytree(only_run(tmp_path), moved)
    result = nntrain("fit", "--resume", str(moved), "--epochs", "2", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "tiny_mlp: completed" in result.output and "scratch: completed" not in result.output


def test_resume_with_set_may_only_train_longer(tmp_path: Path):
    assert nntrain("fit", str(TINY), "-q", cwd=tmp_path).exit_code == 0
    fitted = only_run(tmp_path)
    before = (fitted / "config.yaml").read_text()
    result = nntrain("fit", "--resume", str(fitted), "--set",
                     "model.layers[1].dense.kernel_regularizer={l2: 0.5}")
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "--set changes the run from the config the run started with" in out
    assert "l2: {l2: 0.5}" in result.output
    assert "a resume may only change fit.epochs (--epochs N)" in out
    assert (fitted / "config.yaml").read_text() == before
    epochs = yaml.safe_load(before)["fit"]["epochs"]
    fewer = nntrain("fit", "--resume", str(fitted), "--epochs", str(epochs - 1))
    assert fewer.exit_code == 2
    assert f"has trained {epochs} epochs; fit.epochs {epochs - 1} would be fewer" in \
        " ".join(fewer.output.split())
    assert (fitted / "config.yaml").read_text() == before
    assert nntrain("evaluate", str(fitted), "--split", "validation").exit_code == 0
    evaluated = json.loads((fitted / "metrics.json").read_text())["evaluations"]
    longer = nntrain("fit", "--resume", str(fitted), "--epochs", str(epochs + 1), "-q")
    assert longer.exit_code == 0, longer.output
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["evaluations"] == evaluated and metrics["epochs_completed"] == epochs + 1
    # the evaluation says which epoch's weights it had: the best may have moved on since
    shown = nntrain("runs", "show", str(fitted))
    assert f"evaluate validation (best, epoch {evaluated[0]['epoch']})" in shown.output
    # the run's own config says how long it trained
    assert yaml.safe_load((fitted / "config.yaml").read_text())["fit"]["epochs"] == epochs + 1
    with open(fitted / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == epochs + 1


BINARY_TEXT = """name: pets
data:
  train: pets.csv
  targets: label
  validation: {last: 20}
  test: {last: 20}
model:
  input: [2]
  layers:
    - dense: {units: 1, activation: sigmoid}
compile:
  loss: binary_crossentropy
  optimizer: {sgd: 0.5}
  metrics: [accuracy]
fit: {epochs: 3, batch_size: 16}
"""


def test_predict_names_the_classes_of_a_binary_model_with_text_labels(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = ["a,b,label"] + [f"{a:.3f},{b:.3f},{'dog' if a + b > 0 else 'cat'}"
                            for a, b in rng.standard_normal((120, 2))]
    (tmp_path / "pets.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "pets.yaml").write_text(BINARY_TEXT)
    assert nntrain("fit", "pets.yaml", "-q", cwd=tmp_path).exit_code == 0
    result = nntrain("predict", "pets", "--split", "test", "--limit", "4", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "probability of dog" in result.output
    assert "cat" in result.output or "dog" in result.output
    out = tmp_path / "p.csv"
    result = nntrain("predict", "pets", "--split", "test", "--output", str(out), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    written = list(csv.DictReader(out.open()))
    assert {r["label"] for r in written} <= {"cat", "dog"} and len(written) == 20
    for r in written:
        assert float(r["p_cat"]) + float(r["p_dog"]) == pytest.approx(1.0, abs=1e-6)
        assert r["label"] == ("dog" if float(r["p_dog"]) > 0.5 else "cat")
    # from a file of examples too: the run recorded the names
    np.save(tmp_path / "two.npy", np.array([[2.0, 2.0], [-2.0, -2.0]], np.float32))
    result = nntrain("predict", "pets", "two.npy", "--output", "two.csv", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in csv.DictReader((tmp_path / "two.csv").open())] == ["dog", "cat"]


def fit_npz(work: Path, name: str, x: np.ndarray, y: np.ndarray, dense: str, loss: str,
            *args: str) -> None:
    """A one-layer model trained on `name`.npz (one epoch, batches of 8, unless `args` say
    otherwise), its last 10 rows for validation."""
    np.savez(work / f"{name}.npz", x=x, y=y)
    (work / f"{name}.yaml").write_text(
        f"name: {name}\ndata: {{train: {name}.npz, validation: {{last: 10}}}}\n"
        f"model: {{input: [3], layers: [{{dense: {dense}}}]}}\n"
        f"compile: {{loss: {loss}, optimizer: sgd}}\nfit: {{epochs: 1, batch_size: 8}}\n")
    result = nntrain("fit", f"{name}.yaml", "-q", *args, cwd=work)
    assert result.exit_code == 0, result.output


def fit_classifier(work: Path, name: str, seed: int, *args: str) -> tuple[np.ndarray, ...]:
    """fit_npz of a softmax over two classes on 40 random rows; returns the rows."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, 40)
    fit_npz(work, name, x, y, "{units: 2, activation: softmax}",
            "sparse_categorical_crossentropy", *args)
    return x, y


def test_resume_warns_when_the_data_changed_since_the_run_started(tmp_path: Path):
    x, y = fit_classifier(tmp_path, "changing", 0)
    run = only_run(tmp_path)
    same = nntrain("fit", "--resume", str(run), "--epochs", "2", cwd=tmp_path)
    assert same.exit_code == 0 and "warning" not in same.output
    x[0, 0] += 1.0
    np.savez(tmp_path / "changing.npz", x=x, y=y)
    changed = nntrain("fit", "--resume", str(run), "--epochs", "3", cwd=tmp_path)
    assert changed.exit_code == 0, changed.output
    assert "warning: the train data differ from what" in " ".join(changed.output.split())
    # evaluate and predict say so of the split they read
    evaluated = nntrain("evaluate", str(run), "--split", "train", cwd=tmp_path)
    assert "warning: the train data differ from what" in " ".join(evaluated.output.split())
    assert "these figures are on the new data" in " ".join(evaluated.output.split())
    assert "warning" not in nntrain("evaluate", str(run), "--split", "validation",
                                    cwd=tmp_path).output
    predicted = nntrain("predict", str(run), "--split", "train", "--limit", "2", cwd=tmp_path)
    assert "these predictions are for the new data" in " ".join(predicted.output.split())
    # data of another form: the run's model stays as it is; the data is what changed
    np.savez(tmp_path / "changing.npz", x=np.hstack([x, x[:, :1]]), y=y)
    for command in (["fit", "--resume", str(run), "--epochs", "4"], ["evaluate", str(run)]):
        other = nntrain(*command, cwd=tmp_path)
        assert other.exit_code == 2, other.output
        said = " ".join(other.output.split())
        assert "has examples of shape (4,), the model expects (3,)" in said
        assert "the run's model was trained on data of another form" in said


def test_a_runs_saved_config_from_before_newer_rules_still_reads_back(tmp_path: Path):
    """A run an older nntrain trained may hold what the current rules refuse in a new
    config (two kinds of gradient clipping, an infinite number): evaluate still reads it."""
    assert nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["compile"]["optimizer"]["adam"].update(clipnorm=1.0, clipvalue=0.5)
    saved["fit"]["callbacks"][0]["early_stopping"]["baseline"] = float("inf")
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    result = nntrain("evaluate", str(run), "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    refused = nntrain("validate", str(run / "config.yaml"))  # as a new config: refused
    assert refused.exit_code == 2 and "give one of clipnorm, clipvalue" in refused.output


def test_a_new_run_is_held_while_it_trains(tmp_path: Path):
    import subprocess
    import sys
    import time

    config = tmp_path / "long.yaml"
    config.write_text(TINY.read_text().replace("epochs: 4", "epochs: 3000").replace(
        "patience: 3", "patience: 3000"))
    first = subprocess.Popen([sys.executable, "-m", "nntrain", "fit", str(config), "-q"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("runs/*/*/history.csv")):
            time.sleep(0.05)
        run = next(tmp_path.glob("runs/*/*"))
        second = nntrain("fit", "--resume", str(run), cwd=tmp_path)
        assert second.exit_code == 2, second.output
        assert "is being trained by another process" in second.output
    finally:
        first.send_signal(2)
        first.communicate(timeout=120)


EVALUATES_MEANWHILE = '''
import json, subprocess, sys


class EvaluateMeanwhile:
    """Runs `nntrain evaluate` on this run after epoch 2, while it trains on."""

    def on_epoch_end(self, epoch, logs):
        if epoch == 1:
            subprocess.run([sys.executable, "-m", "nntrain", "evaluate", str(self.model.run_dir),
                            "--checkpoint", "last", "--split", "validation", "--trust-code"],
                           check=True)
'''


def test_an_evaluation_made_while_the_run_trains_is_kept(tmp_path: Path):
    (tmp_path / "meanwhile.py").write_text(EVALUATES_MEANWHILE)
    data = yaml.safe_load(TINY.read_text())
    data["fit"]["callbacks"].append({"meanwhile:EvaluateMeanwhile": {}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    result = nntrain("fit", "c.yaml", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["epochs_completed"] == data["fit"]["epochs"]
    (evaluation,) = metrics["evaluations"]
    # epoch 2's checkpoint is saved after its callbacks: the last one then is epoch 1's
    assert evaluation["split"] == "validation" and evaluation["epoch"] == 1


@pytest.mark.parametrize(("options", "first"), [((), b"Training tiny_mlp"),
                                               (("--log-format", "json"), b"{")])
def test_fit_piped_into_head_trains_to_the_end(tmp_path: Path, options, first):
    """`nntrain fit ... | head -1`: the reader goes away, training goes on unprinted and the
    run completes (rich's default ends the process, and the run was recorded failed)."""
    process = subprocess.Popen([sys.executable, "-m", "nntrain", "fit", str(TINY), *options],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(first)
    process.stdout.close()
    assert process.wait(timeout=120) == 0, process.stderr.read().decode()
    info = json.loads((only_run(tmp_path) / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 4
    assert b"Traceback" not in process.stderr.read()


def test_predict_shows_one_hot_targets_as_their_class(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--epochs", "1", "-q", "--set", "data.one_hot=true",
                     "--set", "compile.loss=categorical_crossentropy", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    table = nntrain("predict", str(only_run(tmp_path)), "--split", "test", "--limit", "3")
    assert table.exit_code == 0, table.output
    rows = [line.split("│")[1:-1] for line in table.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert len(rows) == 3 and all(row[-1].strip() in ("0", "1", "2") for row in rows), \
        table.output


def test_predict_rounds_soft_binary_targets_to_their_class(tmp_path: Path):
    """A target of 0.8 is class 1 (as class_weight reads it), not 0 by truncation."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.where(x[:, 0] > 0, 0.8, 0.2).astype(np.float32)
    fit_npz(tmp_path, "soft", x, y, "{units: 1, activation: sigmoid}", "binary_crossentropy")
    result = nntrain("predict", "soft", "--split", "validation", "--output", "p.csv",
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [int(r["true_class"]) for r in rows] == [int(v > 0.5) for v in y[-10:]]


def test_a_batch_larger_than_the_data_is_the_data_in_one_batch(tmp_path: Path):
    """As Keras: no padding out to 100 million rows, the same history as a batch of exactly
    the 30 training rows; the split evaluated is one batch of itself too."""
    histories = []
    for size in ("30", "100000000"):
        fit_classifier(tmp_path, f"b{size}", 1, "--batch-size", size, "--epochs", "3")
        run, = tmp_path.glob(f"runs/b{size}/*")
        histories.append([{k: v for k, v in row.items() if k != "seconds"}
                          for row in csv.DictReader((run / "history.csv").open())])
    assert histories[0] == histories[1]
    evaluated = nntrain("evaluate", str(run), "--split", "validation", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    too_big = nntrain("fit", "b30.yaml", "--batch-size", str(2**31), cwd=tmp_path)
    assert too_big.exit_code == 2 and "input should be less than 2147483648" in too_big.output


def test_the_batch_of_a_small_split_is_the_split_split_evenly_over_the_devices():
    from nntrain.train.fit import batch_for

    assert batch_for(100_000_000, 30) == 30
    assert batch_for(8, 30) == 8
    assert batch_for(32, 10, devices=4) == 12  # 3 rows a device, the last 2 padding
    assert batch_for(32, 0) == 1


def test_predict_never_writes_over_its_input_or_the_runs_records(tmp_path: Path):
    x, _ = fit_classifier(tmp_path, "guarded", 2)
    run = only_run(tmp_path)
    np.save(tmp_path / "new.npy", x[:4])
    before = {p: p.read_bytes() for p in (tmp_path / "new.npy", run / "run.json",
                                          tmp_path / "guarded.npz")}
    same = nntrain("predict", str(run), "new.npy", "--output", "./new.npy", cwd=tmp_path)
    assert same.exit_code == 2 and "which the predictions are read from" in same.output
    data = nntrain("predict", str(run), "--split", "validation", "--output", "guarded.npz",
                   cwd=tmp_path)  # the run's training file
    assert data.exit_code == 2 and "which the predictions are read from" in data.output
    record = nntrain("predict", str(run), "new.npy", "--output", str(run / "run.json"),
                     cwd=tmp_path)
    assert record.exit_code == 2 and "inside the run directory" in record.output
    other = tmp_path / "elsewhere" / "other_run"  # another run's records: not this one's either
    (other / "checkpoints" / "best").mkdir(parents=True)
    (other / "run.json").write_text("{}")
    before[other / "run.json"] = b"{}"
    for target in (other / "metrics.json", other / "checkpoints" / "best" / "x.npz"):
        foreign = nntrain("predict", str(run), "new.npy", "--output", str(target), cwd=tmp_path)
        assert foreign.exit_code == 2 and "is inside the run directory" in foreign.output
        assert "other_run/predictions" in "".join(foreign.output.split())
        assert not target.exists()
    assert {p: p.read_bytes() for p in before} == before
    kept = nntrain("predict", str(run), "new.npy", "--output",
                   str(run / "predictions" / "new.csv"), cwd=tmp_path)
    assert kept.exit_code == 0, kept.output
    assert len(list(csv.DictReader((run / "predictions" / "new.csv").open()))) == 4


def test_predictions_are_written_whatever_the_output_is_named_and_json_stays_strict(
        tmp_path: Path):
    """An output named `file` (np.savez's own argument) gets its array; a prediction that is
    NaN (inputs far past float32's range) is null in strict JSON, and said on screen."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, 40)
    fit_npz(tmp_path, "named", x, y, "{units: 2, activation: softmax, name: file}",
            "sparse_categorical_crossentropy")
    run = only_run(tmp_path)
    far = np.array([[3e38] * 3, [-3e38] * 3], np.float32)  # a logit of +-inf: inf - inf
    np.save(tmp_path / "new.npy", np.concatenate([x[:2], far]))
    npz = nntrain("predict", str(run), "new.npy", "--output", "out.npz", cwd=tmp_path)
    assert npz.exit_code == 0, npz.output
    with np.load(tmp_path / "out.npz") as saved:
        assert list(saved) == ["file"] and saved["file"].shape == (4, 2)
        broken = int((~np.isfinite(saved["file"])).any(axis=1).sum())
    assert broken and f"warning: {broken} predictions are NaN or infinite" in " ".join(
        npz.output.split())
    written = nntrain("predict", str(run), "new.npy", "--output", "out.json", cwd=tmp_path)
    assert written.exit_code == 0, written.output
    rows = json.loads((tmp_path / "out.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert sum(row["p_0"] is None for row in rows[2:]) == broken
    assert rows[0]["p_0"] is not None and rows[1]["p_0"] is not None


def test_evaluate_says_when_it_reads_the_checkpoint_before_the_one_asked_for(tmp_path: Path):
    """A save cut short between its renames leaves last.prev and no last: evaluate reads it,
    and says so on screen and in metrics.json, instead of passing it off as `last`."""
    fit_classifier(tmp_path, "cut", 3, "--epochs", "2")
    run = only_run(tmp_path)
    shutil.rmtree(run / "checkpoints" / "last.prev", ignore_errors=True)
    (run / "checkpoints" / "last").rename(run / "checkpoints" / "last.prev")
    result = nntrain("evaluate", str(run), "--checkpoint", "last", "--split", "validation")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "last is missing; read last.prev, the checkpoint saved before it (epoch 2)" in said
    assert "last.prev weights (epoch 2; last is missing, so the one saved before it)" in said
    recorded = json.loads((run / "metrics.json").read_text())["evaluations"][-1]
    assert recorded["checkpoint"] == "last.prev"


def test_resuming_a_finished_run_for_no_more_epochs_leaves_its_record_alone(tmp_path: Path):
    fit_classifier(tmp_path, "done", 4, "--epochs", "2")
    run = only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = nntrain("fit", "--resume", str(run), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "has trained all 2 epochs: nothing to train" in " ".join(result.output.split())
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_runs_damaged_config_gets_a_hint_about_the_run_not_about_new_configs(tmp_path):
    fit_classifier(tmp_path, "emptied", 5)
    run = only_run(tmp_path)
    (run / "config.yaml").write_text("")
    result = nntrain("evaluate", str(run))
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "config file is empty" in said and "configs/" not in said
    assert "the run's config.yaml was changed or damaged after nntrain wrote it" in said


def test_a_shortcut_and_a_set_of_the_same_key_are_a_contradiction(tmp_path: Path):
    result = nntrain("fit", str(TINY), "--epochs", "3", "--set", "fit.epochs=7", cwd=tmp_path)
    assert result.exit_code == 2
    assert "--epochs 3 and --set fit.epochs=7 both set fit.epochs: give one" in result.output
    assert not (tmp_path / "runs").exists()


def test_predict_show_draws_at_most_400_images(tmp_path: Path):
    result = nntrain("predict", "whatever", "--show", "100000", cwd=tmp_path)
    assert result.exit_code == 2
    # typer words the range its own way from version to version
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # out of rich's box
    assert re.search(r"'--show'.*(less than or equal to 400|1<=x<=400)", text), text
