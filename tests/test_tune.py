"""`nntrain tune`: search spaces in the config, trials as runs, continuing a stopped search,
Hyperband pruning, several workers on one study, and search-space errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from clirunner import nntrain

from nntrain.config.loader import ConfigError, load_config
from nntrain.tune import space

optuna = pytest.importorskip("optuna")

TINY = """\
name: tiny_tune
seed: 1
data:
  dataset: synthetic
  synthetic: {samples: 300, test_samples: 50, classes: 3}
  validation: {last: 100}
model:
  input: [4]
  layers:
    - dense: {units: 8, activation: relu}
      repeat: 1
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: {type: adam, learning_rate: 0.01}
  metrics: [accuracy]
fit:
  epochs: 2
  batch_size: 50
  steps_per_execution: 1
search:
  algorithm: random
  max_trials: 3
  parameters:
    model.layers.0.repeat: {type: int, min: 0, max: 2, name: n_hidden}
    model.layers.0.dense.units: {type: int, min: 4, max: 16, name: n_neurons}
    compile.optimizer.learning_rate: {type: float, min: 1.0e-3, max: 1.0e-1, log: true}
    compile.optimizer.type: {type: choice, values: [sgd, adam], name: optimizer}
    compile.optimizer.momentum: {type: float, min: 0.0, max: 0.9, when: {optimizer: sgd}}
"""


def write(folder: Path, text: str, name: str = "tune.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def leaderboard(folder: Path) -> list[dict[str, str]]:
    with (folder / "leaderboard.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def subprocess_nntrain(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "nntrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


# -- the search and what it leaves ------------------------------------------------------------
def test_search_prints_leaderboard_writes_best_yaml_that_fit_reproduces(tmp_path: Path):
    config = write(tmp_path, TINY)
    result = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny_tune"
    board = leaderboard(folder)
    assert [row["status"] for row in board] == ["complete"] * 3
    assert sorted(row["trial"] for row in board) == ["0", "1", "2"]
    scores = [float(row["val_accuracy"]) for row in board]
    assert scores == sorted(scores, reverse=True)  # best first
    # the printed table holds every trial and its figure
    for row in board:
        assert f"{float(row['val_accuracy']):.4f}" in result.output
    assert "n_hidden" in result.output and "val_accuracy" in result.output
    # trial 0 is the config as written (its defaults)
    first = next(row for row in board if row["trial"] == "0")
    assert (first["n_hidden"], first["n_neurons"], first["optimizer"]) == ("1", "8", "adam")
    assert first["compile.optimizer.momentum"] == ""  # only searched for sgd
    # each trial is an ordinary run directory
    for row in board:
        run = Path(row["run"]) if Path(row["run"]).is_absolute() else tmp_path / row["run"]
        assert run.name == f"trial-{int(row['trial']):04d}"
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert "search" not in saved
        assert len(saved["model"]["layers"]) == int(row["n_hidden"]) + 1
        assert saved["compile"]["optimizer"] == {row["optimizer"]: saved["compile"]["optimizer"]
                                                 [row["optimizer"]]}
    evaluated = nntrain("evaluate", str(tmp_path / board[0]["run"]), cwd=tmp_path)
    assert evaluated.exit_code == 0 and "accuracy" in evaluated.output
    assert (folder / "tune.png").stat().st_size > 10_000
    assert (folder / "study.db").exists()
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["best"]["trial"] == int(board[0]["trial"])
    assert summary["epochs_trained"] == 6
    if importlib.util.find_spec("tensorboardX") is not None:  # one HPARAMS session a trial
        for row in board:
            session = folder / "tensorboard" / f"trial-{int(row['trial']):04d}"
            assert list(session.glob("events.out.tfevents.*"))
    # best.yaml: a plain config with the best values, which trains to the same figure
    best_text = (folder / "best.yaml").read_text()
    best = yaml.safe_load(best_text)
    assert "search" not in best
    top = board[0]
    assert best["model"]["layers"][0]["repeat"] == int(top["n_hidden"])
    assert best["model"]["layers"][0]["dense"]["units"] == int(top["n_neurons"])
    assert best["compile"]["optimizer"]["type"] == top["optimizer"]
    fitted = nntrain("fit", str(folder / "best.yaml"), "-q", cwd=tmp_path)
    assert fitted.exit_code == 0, fitted.output
    run = max((folder).glob("2*"))  # the fit's run directory, beside the trials
    again = max(float(r["val_accuracy"]) for r in history(run))
    assert f"{again:.4f}" == f"{float(top['val_accuracy']):.4f}"
    # more trials continue the same study: the first three are not trained again
    before = {p.name: (p / "run.json").stat().st_mtime for p in folder.glob("trial-*")}
    more = nntrain("tune", str(config), "-q", "--set", "search.max_trials=4", cwd=tmp_path)
    assert more.exit_code == 0, more.output
    assert "3 of 4 trials done" in more.output
    after = {p.name: (p / "run.json").stat().st_mtime for p in folder.glob("trial-*")}
    assert sorted(after) == [*sorted(before), "trial-0003"]
    assert all(after[name] == mtime for name, mtime in before.items())
    assert len(leaderboard(folder)) == 4
    # a changed search is refused, not mixed into the old study
    changed = nntrain("tune", str(config), "--set", "fit.epochs=3", cwd=tmp_path)
    assert changed.exit_code == 2
    assert "different search" in changed.output and "+  epochs: 3" in changed.output
    assert "Traceback" not in changed.output
    assert f"delete the folder {Path('runs') / 'tiny_tune'}" in " ".join(changed.output.split())
    # the study deleted but not its trials: refused before any trial, not 4 failed trials
    (folder / "study.db").unlink()
    orphaned = nntrain("tune", str(config), "--set", "fit.epochs=3", cwd=tmp_path)
    assert orphaned.exit_code == 2, orphaned.output
    assert "holds trials of an earlier search (trial-0000, trial-0001, trial-0002, ...)" \
        in " ".join(orphaned.output.split())
    assert not (folder / "trial-0004").exists() and not (folder / "study.db").exists()


def test_a_study_saved_before_a_new_setting_existed_is_the_same_search():
    from nntrain.tune.command import fingerprint, in_current_form

    loaded = load_config(Path(__file__).resolve().parents[1] / "configs" / "fashion_tune.yaml")
    current = fingerprint(loaded)
    older = yaml.safe_load(current)
    del older["compile"]["weighted_metrics"]  # as a version without the setting saved it
    assert in_current_form(yaml.safe_dump(older, sort_keys=False)) == current
    older["fit"]["epochs"] += 1
    assert in_current_form(yaml.safe_dump(older, sort_keys=False)) != current
    assert in_current_form("not: [valid") == "not: [valid"


def _search_in_its_second_trial(tmp_path: Path, *args: str
                                ) -> tuple[Path, Path, subprocess.Popen]:
    """A two-trial search of 30 epochs a trial, started and now training trial 1: its
    config, its folder and its process."""
    config = write(tmp_path, TINY.replace("epochs: 2", "epochs: 30").replace(
        "max_trials: 3", "max_trials: 2"))
    folder = tmp_path / "runs" / "tiny_tune"
    process = subprocess_nntrain("tune", str(config), "-q", *args, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (folder / "trial-0001" / "history.csv").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return config, folder, process


def test_killed_search_continues_and_retries_the_interrupted_trial(tmp_path: Path):
    config, folder, process = _search_in_its_second_trial(tmp_path)
    process.kill()  # no chance to clean up: trial 1 stays "running" in the study
    process.wait()
    # the search, not fit --resume, trains a killed trial again, and the listing says so
    listing = nntrain("runs", "tiny_tune", cwd=tmp_path)
    assert "the search's `nntrain tune` command trains a trial anew" in \
        " ".join(listing.output.split())
    resumed = nntrain("fit", "--resume", str(folder / "trial-0001"), cwd=tmp_path)
    assert resumed.exit_code == 2 and "is a trial of the search" in resumed.output
    result = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    board = leaderboard(folder)
    done = [row for row in board if row["status"] == "complete"]
    assert len(done) == 2  # the total reaches max_trials
    assert [row["trial"] for row in board if row["status"] == "interrupted"] == ["1"]
    study = optuna.load_study(study_name="tiny_tune",
                              storage=f"sqlite:///{folder / 'study.db'}")
    trials = {t.number: t for t in study.trials}
    retried = [t for t in trials.values() if t.user_attrs.get("retry_of") == 1]
    assert len(retried) == 1 and retried[0].params == trials[1].params
    assert retried[0].state.name == "COMPLETE"
    # trial 0 ran once, before the kill: its run was not redone
    assert sum(1 for row in done if row["trial"] == "0") == 1
    assert len(history(folder / "trial-0000")) == 30


def test_a_trial_its_worker_never_claimed_is_retried_after_the_grace_period(
        tmp_path: Path, monkeypatch):
    """A worker killed between asking for a trial and writing its host and pid: no pid to
    check, no heartbeat ever beat; once the grace period is past the trial is failed and its
    values queued again, and a claimed trial of a live worker is left alone."""
    from nntrain.tune import study as studies

    storage = studies.open_storage(studies.sqlite_url(tmp_path / "study.db"))
    study = optuna.create_study(study_name="s", storage=storage)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    live = studies.next_trial(study, 5, tmp_path)  # this process: host and pid, alive
    assert studies.reap(study) == []  # within the grace period: it may still claim it
    monkeypatch.setattr(studies, "GRACE_SECONDS", -1)
    assert studies.reap(study) == [orphan.number]
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert states[orphan.number] == "FAIL" and states[live.number] == "RUNNING"
    queued = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert [t.user_attrs["retry_of"] for t in queued] == [orphan.number]


def test_ctrl_c_stops_the_search_and_the_same_command_finishes_it(tmp_path: Path):
    # an override that changes nothing: the command to continue with repeats it
    config, folder, process = _search_in_its_second_trial(tmp_path, "--set",
                                                          "fit.batch_size=50")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Trial 1: interrupted" in output and "Run the same command to continue" in output
    assert f"nntrain tune {config} --set fit.batch_size=50" in " ".join(output.split())
    assert "Traceback" not in output
    board = leaderboard(folder)  # written on the way out, with what was done
    assert [(r["trial"], r["status"]) for r in board] == [("0", "complete"),
                                                          ("1", "interrupted")]
    result = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "Trial 2 (again, for interrupted trial 1)" in result.output
    board = leaderboard(folder)
    assert sorted(r["trial"] for r in board if r["status"] == "complete") == ["0", "2"]
    params = {r["trial"]: {k: r[k] for k in ("n_hidden", "n_neurons", "optimizer")}
              for r in board}
    assert params["2"] == params["1"]


def _two_workers_training(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    """A two-trial search of long trials in two workers, both now training: its folder and
    the command's process."""
    config = write(tmp_path, TINY.replace("epochs: 2", "epochs: 5000").replace(
        "max_trials: 3", "max_trials: 2"))
    folder = tmp_path / "runs" / "tiny_tune"
    process = subprocess_nntrain("tune", str(config), "--workers", "2", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not all((folder / f"trial-000{i}" / "history.csv").exists() for i in (0, 1)):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return folder, process


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGINT, signal.SIGINT],
                                     [signal.SIGHUP]], ids=["ctrl-c", "twice", "hangup"])
def test_ctrl_c_with_workers_is_announced_once_and_stops_every_trial(tmp_path: Path,
                                                                     signals: list):
    """The workers run in process groups of their own: a Ctrl-C reaches the command, which
    says so once and passes it on (once: a worker that got two signals would take the
    second for a second Ctrl-C); a second Ctrl-C stops the workers at once. A closed
    terminal (SIGHUP) stops them too, instead of leaving them running."""
    folder, process = _two_workers_training(tmp_path)
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.2)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signals[0], output
    name = signal.Signals(signals[0]).name
    assert output.count(f"{name}: each worker stops its trial after the current steps") == 1
    assert "SIGTERM" not in output and "Traceback" not in output, output
    stopped = sorted(line.split(":")[0] for line in output.splitlines()
                     if "interrupted; it runs again" in line)
    assert stopped == ["worker 1", "worker 2"], output
    assert [r["status"] for r in leaderboard(folder)] == ["interrupted"] * 2


def test_workers_of_a_killed_command_stop_and_leave_their_trials_to_run_again(tmp_path: Path):
    """kill -9 of the command: its workers, in process groups of their own, see it gone and
    stop as at a Ctrl-C instead of searching on."""
    folder, process = _two_workers_training(tmp_path)
    process.kill()
    process.communicate()
    study = optuna.load_study(study_name="tiny_tune",
                              storage=f"sqlite:///{folder / 'study.db'}")
    deadline = time.monotonic() + 60
    while any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
        assert time.monotonic() < deadline, "the workers went on"
        time.sleep(0.2)
    trials = study.get_trials(deepcopy=False)
    stopped = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(stopped) == 2 and all(t.state.name == "FAIL" for t in stopped)
    assert sorted(t.user_attrs["retry_of"] for t in trials if t.state.name == "WAITING") == \
        sorted(t.number for t in stopped)  # queued to run again


def test_hyperband_prunes_trials_early(tmp_path: Path):
    text = TINY.replace("algorithm: random",
                        "algorithm: hyperband\n  hyperband: {reduction_factor: 2}") \
        .replace("max_trials: 3", "max_trials: 8").replace("epochs: 2", "epochs: 6")
    text = text.replace("min: 1.0e-3, max: 1.0e-1", "min: 1.0e-5, max: 1.0e-1")
    config = write(tmp_path, text)
    result = nntrain("tune", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny_tune"
    board = leaderboard(folder)
    pruned = [row for row in board if row["status"] == "pruned"]
    assert pruned and "pruned after epoch" in result.output
    total = sum(int(row["epochs"]) for row in board)
    assert total <= 0.75 * 8 * 6, total
    for row in pruned:
        run = tmp_path / row["run"]
        assert len(history(run)) == int(row["epochs"]) < 6
        info = yaml.safe_load((run / "run.json").read_text())
        assert info["status"] == "stopped" and "pruned" in info["stop_reason"]


def test_two_workers_share_one_study(tmp_path: Path):
    text = TINY.replace("max_trials: 3", "max_trials: 4").replace("epochs: 2", "epochs: 8")
    config = write(tmp_path, text)
    result = nntrain("tune", str(config), "--workers", "2", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny_tune"
    board = leaderboard(folder)
    assert sorted(int(row["trial"]) for row in board) == [0, 1, 2, 3]
    assert [row["status"] for row in board] == ["complete"] * 4
    runs = sorted(p.name for p in folder.glob("trial-*"))
    assert runs == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]
    for run in runs:
        assert len(history(folder / run)) == 8
    study = optuna.load_study(study_name="tiny_tune",
                              storage=f"sqlite:///{folder / 'study.db'}")
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False))  # ran at once


def test_grid_tries_each_point_once_and_stops_at_the_grid_size(tmp_path: Path):
    text = TINY.replace("algorithm: random", "algorithm: grid").replace(
        "max_trials: 3", "max_trials: 50").replace("epochs: 2", "epochs: 1")
    text = text.replace("{type: int, min: 0, max: 2, name: n_hidden}",
                        "{type: int, min: 1, max: 1, name: n_hidden}").replace(
        "min: 4, max: 16,", "min: 4, max: 8, step: 4,").replace(
        "{type: float, min: 1.0e-3, max: 1.0e-1, log: true}", "{type: choice, values: [0.01]}")
    text = text.replace("min: 0.0, max: 0.9, when", "min: 0.0, max: 0.5, step: 0.5, when")
    result = nntrain("tune", str(write(tmp_path, text)), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "6 trials of a 6-point grid" in result.output
    board = leaderboard(tmp_path / "runs" / "tiny_tune")
    points = {(r["n_neurons"], r["optimizer"], r["compile.optimizer.momentum"]) for r in board}
    # 2 widths x (adam, sgd with momentum 0 or 0.5): momentum only where it applies
    assert points == {(w, "adam", "") for w in ("4", "8")} | {
        (w, "sgd", m) for w in ("4", "8") for m in ("0.0", "0.5")}
    assert len(board) == 6


@pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is not None,
                    reason="torch is installed: the Gaussian-process sampler can run")
def test_gp_without_torch_says_what_to_install(tmp_path: Path):
    config = write(tmp_path, TINY.replace("algorithm: random", "algorithm: gp"))
    result = nntrain("tune", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "needs torch" in result.output and "pip install torch" in result.output
    assert not (tmp_path / "runs").exists()


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "where", "message"), [
    (("{type: int, min: 4, max: 16, name: n_neurons}",
      "{type: int, min: 16, max: 4, name: n_neurons}"),
     "tune.yaml:26:59: search.parameters.model.layers.0.dense.units.max",
     "max is less than min 16"),
    (("model.layers.0.dense.units:", "model.layers.0.dense.unit:"),
     "tune.yaml:26:5: search.parameters.model.layers.0.dense.unit",
     "did you mean 'units'"),
    (("model.layers.0.repeat:", "model.layers.5.repeat:"),
     "tune.yaml:25:5: search.parameters.model.layers.5.repeat",
     "unknown config path: model.layers has 2 entries (0 .. 1), not 5"),
    (("min: 1.0e-3, max: 1.0e-1, log: true", "min: 0.0, max: 1.0e-1, log: true"),
     "tune.yaml:27:57: search.parameters.compile.optimizer.learning_rate.min",
     "a log scale needs min > 0"),
    (("{type: int, min: 4, max: 16, name: n_neurons}",
      "{type: float, min: 4, max: 16, name: n_neurons}"),
     "tune.yaml:26:5: search.parameters.model.layers.0.dense.units",
     "input should be a valid integer"),
    (("{type: int, min: 0, max: 2, name: n_hidden}", "{type: int, min: zero, max: 2}"),
     "tune.yaml:25:45: search.parameters.model.layers.0.repeat.min",
     "input should be a valid integer"),
    (("values: [sgd, adam]", "values: [sgd, adamm]"),
     "tune.yaml:28:5: search.parameters.compile.optimizer.type",
     "unknown optimizer 'adamm'"),
    (("when: {optimizer: sgd}", "when: {optimizer: sgdd}"),
     "tune.yaml:29:85: search.parameters.compile.optimizer.momentum.when.optimizer",
     "'sgdd' is not one of optimizer's values"),
])
def test_invalid_search_space_is_a_config_error(tmp_path: Path, edit, where, message):
    old, new = edit
    assert old in TINY
    config = write(tmp_path, TINY.replace(old, new))
    result = nntrain("tune", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "invalid config (1 problem)" in result.output
    assert f"{config.parent}/{where}" in result.output, result.output
    assert where in result.output and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_tune_needs_a_search_section_and_a_known_objective(tmp_path: Path):
    plain = write(tmp_path, TINY.split("search:")[0], "plain.yaml")
    result = nntrain("tune", str(plain), cwd=tmp_path)
    assert result.exit_code == 2 and "no search: section" in result.output
    config = write(tmp_path, TINY.replace("algorithm: random", "objective: val_acc"))
    result = nntrain("tune", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "search.objective: the epoch logs have no 'val_acc'" in result.output
    assert "did you mean 'val_accuracy'" in result.output
    assert not (tmp_path / "runs").exists()
    # the place as the file has it, without the schema's class names
    config = write(tmp_path, TINY.replace("algorithm: random",
                                          "objective: {metric: val_loss, direction: up}"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "search.objective.direction: expected one of 'max', 'min' or 'auto', found 'up'" \
        in result.output


def test_a_renamed_metric_as_objective_takes_its_kinds_direction(tmp_path: Path):
    """`top2` is a top-k accuracy by another name: direction auto maximises it; a name
    alone would have said minimise."""
    from nntrain.build import prepare
    from nntrain.tune.command import resolve_objective

    text = TINY.replace("metrics: [accuracy]", "metrics: [{top_k_categorical_accuracy: "
                        "{k: 2, name: top2}}]").replace("sparse_categorical_crossentropy",
                                                        "categorical_crossentropy")
    text = text.replace("  validation: {last: 100}", "  validation: {last: 100}\n  one_hot: true")
    for objective, expected in (("val_top2", "max"), ("val_loss", "min"),
                                ("{metric: val_top2, direction: min}", "min")):
        loaded = load_config(write(tmp_path, text.replace("algorithm: random",
                                                          f"objective: {objective}")))
        setup = prepare(loaded)
        assert resolve_objective(loaded, setup, {}, {})[1] == expected, objective


# -- repeat: and the space itself -------------------------------------------------------------
def test_repeat_expands_layers_with_unique_names_and_zero_removes(tmp_path: Path):
    text = TINY.split("search:")[0].replace(
        "- dense: {units: 8, activation: relu}\n      repeat: 1",
        "- dense: {units: 8, activation: relu, name: hidden}\n      repeat: 3\n"
        "    - dropout: 0.1\n      repeat: 0")
    loaded = load_config(write(tmp_path, text))
    layers = loaded.config.model.layers
    assert [type(e).model_fields.__iter__().__next__() for e in layers] == ["dense"] * 4
    assert [e.dense.name for e in layers[:3]] == ["hidden_1", "hidden_2", "hidden_3"]
    # errors after the expanded layers still point at their line in the file
    bad = text.replace("activation: softmax", "activation: sofmax")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad))
    assert ":14:" in str(info.value.issues[0].where)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), ["model.layers.0.repeat=-1"])
    assert "model.layers[0].repeat: expected a number of copies" in str(info.value)


def test_data_limit_trains_on_the_first_examples_and_keeps_the_splits(tmp_path: Path):
    from nntrain.build import prepare
    from nntrain.data.sources import load_dataset

    def splits(extra: list[str]):
        loaded = load_config(write(tmp_path, TINY), extra)
        setup = prepare(loaded)
        return load_dataset(loaded.config.data, setup.io, tmp_path, loaded.config.seed)

    full, limited = splits([]), splits(["data.limit=50"])
    assert len(full.train) == 200 and len(limited.train) == 50
    assert (limited.train.x["input"] == full.train.x["input"][:50]).all()
    assert limited.validation.digest() == full.validation.digest()
    assert limited.test.digest() == full.test.digest()


def test_conditional_space_defaults_and_grid_size(tmp_path: Path):
    loaded = load_config(write(tmp_path, TINY))
    raw = yaml.safe_load(TINY)
    dims = space.dimensions(loaded.config.search, raw)
    assert space.defaults(dims) == {"n_hidden": 1, "n_neurons": 8,
                                    "compile.optimizer.learning_rate": 0.01,
                                    "optimizer": "adam"}  # momentum only for sgd
    point = space.with_value(dims, "optimizer", "sgd")
    assert point["compile.optimizer.momentum"] == 0.0
    applied = space.apply(raw, dims, point)
    assert applied["compile"]["optimizer"] == {"type": "sgd", "learning_rate": 0.01,
                                               "momentum": 0.0}
    assert "search" not in applied
    grid = TINY.replace("algorithm: random", "algorithm: grid").replace(
        "min: 1.0e-3, max: 1.0e-1, log: true", "min: 0.01, max: 0.03, step: 0.01").replace(
        "min: 0.0, max: 0.9, when", "min: 0.0, max: 0.5, step: 0.5, when")
    loaded = load_config(write(tmp_path, grid, "grid.yaml"))
    dims = space.dimensions(loaded.config.search, yaml.safe_load(grid))
    # 3 depths x 13 widths x 3 rates x (adam + sgd x 2 momenta)
    assert space.grid_size(dims) == 3 * 13 * 3 * 3


def test_a_search_whose_every_trial_fails_exits_1(tmp_path: Path):
    # a learning rate that sends every trial's loss to infinity
    text = TINY.replace("min: 1.0e-3, max: 1.0e-1", "min: 1.0e30, max: 1.0e31").replace(
        "max_trials: 3", "max_trials: 2")
    result = nntrain("tune", str(write(tmp_path, text)), "-q", cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert "No trial completed" in result.output and "Traceback" not in result.output


def test_a_short_optimizer_entry_is_searched_one_level_down(tmp_path: Path):
    short = TINY.replace("optimizer: {type: adam, learning_rate: 0.01}",
                         "optimizer: {adam: {learning_rate: 0.01}}")
    plain = write(tmp_path, short.split("search:")[0], "plain.yaml")
    hint = nntrain("tune", str(plain), cwd=tmp_path).output
    assert "compile.optimizer.adam.learning_rate: {type: float" in " ".join(hint.split())
    space = short.split("  parameters:")[0] + (
        "  parameters:\n"
        "    compile.optimizer.learning_rate: {type: float, min: 1.0e-3, max: 0.1, log: true}\n")
    result = nntrain("tune", str(write(tmp_path, space)), cwd=tmp_path)
    assert result.exit_code == 2
    assert "compile.optimizer is written {adam: {...}}: search " \
        "compile.optimizer.adam.learning_rate" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_set_reaches_a_search_parameters_settings_by_its_dotted_key(tmp_path: Path):
    config = write(tmp_path, TINY)
    result = nntrain("validate", str(config), "--set",
                     "search.parameters.model.layers.0.dense.units.max=2", cwd=tmp_path)
    assert result.exit_code == 2
    assert "search.parameters.model.layers.0.dense.units.max: max is less than min 4" \
        in " ".join(result.output.split())
    ok = nntrain("validate", str(config), "--set",
                 "search.parameters.model.layers.0.dense.units.max=32", cwd=tmp_path)
    assert ok.exit_code == 0, ok.output
    for key in ("model.layers.0.dense.units", "fit.batch_size"):  # replaced, or new, whole
        whole = nntrain("validate", str(config), "--set",
                        f"search.parameters.{key}={{type: int, min: 10, max: 50}}", cwd=tmp_path)
        assert whole.exit_code == 0, whole.output
    typo = nntrain("validate", str(config), "--set",
                   "search.parameters.new={type: flaot, min: 0, max: 1}", cwd=tmp_path)
    assert typo.exit_code == 2
    assert "unknown type 'flaot': expected a mapping with type: one of int, float, choice, " \
        "bool; did you mean 'float'?" in " ".join(typo.output.split())
    assert "discriminator" not in typo.output
    # the objective is checked as tune checks it
    objective = nntrain("validate", str(config), "--set", "search.objective=val_acuracy",
                        cwd=tmp_path)
    assert objective.exit_code == 2
    assert "search.objective: the epoch logs have no 'val_acuracy'" in objective.output
    assert "did you mean 'val_accuracy'" in objective.output


def test_a_full_disk_under_the_study_is_said_plainly(tmp_path: Path, monkeypatch):
    """SQLite's 'database or disk is full', raised through optuna, is the full-disk message
    fit gives, exit 2, not a traceback."""
    import sqlite3

    def full(self, value, step):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the "
                                                         "commit.") from e

    monkeypatch.setattr(optuna.trial.Trial, "report", full)
    config = write(tmp_path, TINY)
    result = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "no space left on the device while writing the study in runs/tiny_tune" in \
        " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_ctrl_c_in_a_trials_test_evaluation_keeps_the_finished_trial(tmp_path: Path,
                                                                      monkeypatch):
    """The trial had trained to its end: it counts, complete, and the search stops after
    it (exit 130), instead of throwing it away to train it again."""
    from nntrain.train.fit import Fitter

    evaluate_test = Fitter.evaluate_test

    def interrupted(self):
        os.kill(os.getpid(), signal.SIGINT)  # noted; the evaluation stops after its first part
        return evaluate_test(self)

    monkeypatch.setattr(Fitter, "evaluate_test", interrupted)
    config = write(tmp_path, TINY.replace("  validation: {last: 100}",
                                          "  validation: {last: 100}\n  test: {last: 50}"))
    result = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 130, result.output
    board = leaderboard(tmp_path / "runs" / "tiny_tune")
    assert [(r["trial"], r["status"]) for r in board] == [("0", "complete")]


def test_a_storage_url_is_printed_without_its_password(tmp_path: Path):
    from nntrain.tune.study import printable

    assert printable("postgresql://ann:s3cret@db.lab:5432/studies") == \
        "postgresql://ann:***@db.lab:5432/studies"
    assert printable("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"
    assert printable("mysql://u:pw@h/db", "cannot reach mysql://u:pw@h/db (u:pw@h)") == \
        "cannot reach mysql://u:***@h/db (u:***@h)"
    # the driver is missing or the server unreachable: the error never shows the password
    config = write(tmp_path, TINY)
    for url in ("mysql://u:s3cret@127.0.0.1:1/db", "postgresql://u:s3cret@127.0.0.1:1/db"):
        result = nntrain("tune", str(config), "--storage", url, cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert "s3cret" not in result.output and "u:***@127.0.0.1" in result.output


def test_a_damaged_local_study_file_is_named_with_what_to_do(tmp_path: Path):
    """A study.db that is not an SQLite database: the file and the fix, not a server's."""
    from nntrain.errors import UserError
    from nntrain.tune.study import open_storage, sqlite_url

    damaged = tmp_path / "study.db"
    damaged.write_bytes(b"not a database " * 20)
    with pytest.raises(UserError) as caught:
        open_storage(sqlite_url(damaged))
    assert caught.value.message.startswith(f"cannot open the study storage {damaged}: ")
    assert caught.value.hint == f"{damaged} is damaged or not an SQLite database: restore " \
        "it from a copy, or to start the search afresh delete it and the trial-* folders " \
        f"beside it in {tmp_path}"
    # not there at all: a folder to make, not a file to mend
    with pytest.raises(UserError) as caught:
        open_storage(sqlite_url(tmp_path / "studies" / "study.db"))
    assert caught.value.hint == f"{tmp_path / 'studies'} is not a folder that exists: create " \
        "it, or give another path"
    with pytest.raises(UserError) as caught:
        open_storage(sqlite_url(tmp_path))  # a folder where the file would be
    assert caught.value.hint == f"{tmp_path} is not a file nntrain can create there: give " \
        "another path"


@pytest.mark.parametrize("layer_first", [True, False])
def test_parameters_that_overlap_are_a_config_error(tmp_path: Path, layer_first: bool):
    """A whole layer searched beside one of its arguments: one would undo the other."""
    layer = ("    model.layers.1: {type: choice, values: [{dense: 3}, "
             "{dense: {units: 3, activation: softmax}}]}\n")
    argument = "    model.layers.1.dense.activation: {type: choice, values: [softmax, linear]}\n"
    head, params = TINY.split("  parameters:\n")
    text = head + "  parameters:\n" + (layer + argument if layer_first else argument + layer)
    config = write(tmp_path, text)
    for command in ("validate", "tune"):
        result = nntrain(command, str(config), cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "model.layers.1 replaces the part of the config model.layers.1.dense.activation " \
            "sets" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_hyperband_that_could_never_prune_is_a_config_error(tmp_path: Path):
    text = TINY.replace("algorithm: random", "algorithm: hyperband\n  hyperband: {min_epochs: 5}")
    result = nntrain("validate", str(write(tmp_path, text)), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "search.hyperband.min_epochs: 5 epochs before a trial may be pruned, and " \
        "fit.epochs is 2: no trial would ever be pruned" in " ".join(result.output.split())


def test_only_the_command_that_creates_a_study_draws_from_the_configs_seed(tmp_path: Path,
                                                                          monkeypatch):
    """Two commands started at once on a new study (or on machines sharing --storage) must
    not draw the same trials: the second, finding the study made, seeds from fresh entropy."""
    from nntrain.tune import study as studies
    from nntrain.tune.space import dimensions

    loaded = load_config(write(tmp_path, TINY))
    search = loaded.config.search
    dims = dimensions(search, yaml.safe_load(TINY))
    storage = studies.open_storage(studies.sqlite_url(tmp_path / "study.db"))
    seeds: list[int] = []
    make = studies.make_sampler
    monkeypatch.setattr(studies, "make_sampler",
                        lambda search, dims, seed: seeds.append(seed) or make(search, dims, seed))
    made = [studies.open_study(storage, "s", "max", "f", dims, search, 7, worker, 2)[1]
            for worker in (0, 0, 1)]
    assert made == [True, False, False]
    assert seeds[0] == 7 and len(set(seeds)) == 3


def test_a_ctrl_c_while_the_search_sets_up_is_acted_on_not_lost(tmp_path: Path, monkeypatch):
    from nntrain import commands

    configure = commands.configure_jax

    def interrupted_while_configuring():
        os.kill(os.getpid(), signal.SIGINT)  # raised at once, a gc callback could swallow it
        configure()

    monkeypatch.setattr(commands, "configure_jax", interrupted_while_configuring)
    result = nntrain("tune", str(write(tmp_path, TINY)), cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "runs").exists()


def test_data_that_cannot_be_read_stops_the_search_without_using_it_up(tmp_path: Path):
    """A missing data file would fail every trial alike: the search stops at the first,
    exit 2, and once the file is there the same command runs all the trials."""
    text = TINY.replace("  dataset: synthetic\n  synthetic: {samples: 300, test_samples: 50, "
                        "classes: 3}\n", "  train: d.npz\n").replace("max_trials: 3",
                                                                    "max_trials: 2")
    config = write(tmp_path, text)
    result = nntrain("tune", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "d.npz" in result.output and "Traceback" not in result.output
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(300, 4)).astype(np.float32),
             y=rng.integers(0, 3, 300))
    again = nntrain("tune", str(config), "-q", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert "Trial 1 (again, for interrupted trial 0)" in again.output, again.output
    board = leaderboard(tmp_path / "runs" / "tiny_tune")
    assert sorted(r["status"] for r in board if r["status"] != "interrupted") == \
        ["complete", "complete"]


def test_choices_of_lists_and_mappings_are_shown_as_a_config_writes_them():
    from nntrain.tune.space import format_value

    assert format_value({"dense": {"units": 6, "activation": "elu"}}) == \
        "{dense: {activation: elu, units: 6}}"
    assert format_value([64, 32]) == "[64, 32]"
    assert format_value(0.000123) == "0.000123" and format_value(True) == "True"
