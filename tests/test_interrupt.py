"""Ctrl-C and SIGTERM stop training cleanly (checkpoint, status, exit code), and --resume
continues from inside the interrupted epoch to the same weights as an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

TINY = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "long.yaml"
    config.write_text(TINY.read_text()
                      .replace("samples: 600", "samples: 40000")
                      .replace("input: [4, 4]", "input: [16, 16]")
                      .replace("epochs: 4", "epochs: 30")
                      .replace("patience: 3", "patience: 20"))
    return config


def _run(folder: Path) -> Path:
    return next(folder.glob("runs/*/*"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_saves_and_resumes_bit_identically(tmp_path: Path, signum, code):
    config = _config(tmp_path)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir()
    stopped.mkdir()
    command = [sys.executable, "-m", "nntrain", "fit", str(config), "-q"]
    subprocess.run(command, cwd=whole, check=True, capture_output=True)

    process = subprocess.Popen(command, cwd=stopped, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if list(stopped.glob("runs/*/*/history.csv")):  # epoch 1 recorded
            break
        time.sleep(0.01)
    time.sleep(0.05)  # inside a later epoch, most likely; a boundary must work as well
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, out + err
    assert "Traceback" not in err
    run = _run(stopped)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and "interrupted" in info["stop_reason"]
    meta = json.loads((run / "checkpoints/last/checkpoint.json").read_text())
    assert meta["epoch"] < 30

    resumed = subprocess.run([sys.executable, "-m", "nntrain", "fit", "--resume", str(run),
                              "-q"], cwd=stopped, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    if meta.get("step_in_epoch"):  # stopped inside an epoch: its time counts both parts
        seconds = float(list(csv.DictReader((run / "history.csv").open()))[meta["epoch"]]
                        ["seconds"])
        assert 0 < meta["seconds_in_epoch"] <= seconds

    def history(folder):
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader((_run(folder) / "history.csv").open())]

    assert history(stopped) == history(whole)
    a = load_file(str(run / "checkpoints/last/arrays.safetensors"))
    b = load_file(str(_run(whole) / "checkpoints/last/arrays.safetensors"))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


SIGNAL_AT_END = '''
import os
import signal


class SignalAtEnd:
    """Ctrl-C as training ends: after the last epoch, before the test evaluation."""

    def on_train_end(self, logs=None):
        os.kill(os.getpid(), signal.SIGINT)
'''


STOP_IN_EPOCH_2 = '''
import os
import signal
from pathlib import Path


def halve(epoch, lr):
    return lr if epoch == 0 else lr * 0.5


class StopInEpoch2:
    """Ctrl-C inside the second epoch, once: a marker file says it happened. Counts its
    on_epoch_begin and on_train_batch_end calls, a state carried across --resume."""

    def __init__(self):
        self.begins = self.batches = 0

    def state(self):
        return {"begins": self.begins, "batches": self.batches}

    def load_state(self, state):
        self.begins, self.batches = state["begins"], state["batches"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.begins += 1

    def on_train_end(self, logs=None):
        Path("counts").write_text(f"{self.begins} {self.batches}")

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        marker = Path("stopped-once")
        if self.epoch == 1 and batch >= 3 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGINT)
'''


def test_resume_inside_an_epoch_applies_its_learning_rate_schedule_once(tmp_path: Path):
    """The epoch's on_epoch_begin hooks run again on resume, from the rate and the callbacks'
    states before them: a compounding `lr * 0.5` schedule halves the rate once, as in the
    uninterrupted run."""
    config = tmp_path / "sched.yaml"
    config.write_text(TINY.read_text().replace("epochs: 4", "epochs: 3\n  steps_per_execution: 2")
                      .replace("  callbacks:\n", "  callbacks:\n    - learning_rate_scheduler: "
                               "stops:halve\n    - stops:StopInEpoch2\n"))
    (tmp_path / "stops.py").write_text(STOP_IN_EPOCH_2)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for folder in (whole, stopped):
        folder.mkdir()
    (whole / "stopped-once").touch()  # this run is never interrupted
    command = [sys.executable, "-m", "nntrain", "fit", str(config), "-q", "--trust-code"]
    subprocess.run(command, cwd=whole, check=True, capture_output=True)
    done = subprocess.run(command, cwd=stopped, capture_output=True, text=True)
    assert done.returncode == 130, done.stdout + done.stderr
    run = _run(stopped)
    meta = json.loads((run / "checkpoints/last/checkpoint.json").read_text())
    assert meta["epoch"] == 1 and meta["step_in_epoch"] > 0 and meta["seconds_in_epoch"] > 0
    evaluated = subprocess.run([sys.executable, "-m", "nntrain", "evaluate", str(run),
                                "--checkpoint", "last", "--trust-code"], cwd=stopped,
                               capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert f"last weights (epoch 1 and {meta['step_in_epoch']} steps of the next)" in \
        " ".join(evaluated.stdout.split())
    resumed = subprocess.run([sys.executable, "-m", "nntrain", "fit", "--resume", str(run),
                              "-q", "--trust-code"], cwd=stopped, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    def history(folder):
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader((_run(folder) / "history.csv").open())]

    assert [float(row["learning_rate"]) for row in history(stopped)] == \
        pytest.approx([0.01, 0.005, 0.0025])
    assert history(stopped) == history(whole)
    # the interrupted epoch's seconds count the time before the stop as well
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert float(rows[1]["seconds"]) >= meta["seconds_in_epoch"]
    # the resumed epoch's on_epoch_begin ran again, from the state before its first run; the
    # batches counted before the stop stay counted
    begins, batches = (whole / "counts").read_text().split()
    assert begins == "3" and int(batches) > 3
    assert (stopped / "counts").read_text() == (whole / "counts").read_text()


def test_ctrl_c_after_the_last_epoch_leaves_a_completed_run(tmp_path: Path):
    (tmp_path / "late.py").write_text(SIGNAL_AT_END)
    config = tmp_path / "late.yaml"
    config.write_text(TINY.read_text().replace("epochs: 4", "epochs: 2").replace(
        "  callbacks:\n", "  callbacks:\n    - late:SignalAtEnd\n"))
    command = [sys.executable, "-m", "nntrain", "fit", str(config)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = " ".join(done.stdout.split())
    assert "Stopped (SIGINT) after the last epoch: training is complete" in out
    assert "--resume" not in out and "nntrain evaluate" in out
    run = _run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and not info.get("stop_reason")
    resumed = subprocess.run([sys.executable, "-m", "nntrain", "fit", "--resume", str(run),
                              "--trust-code"], cwd=tmp_path, capture_output=True, text=True)
    assert "has trained all 2 epochs: nothing to train" in " ".join(resumed.stdout.split())


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_the_test_evaluation_keeps_the_completed_run(tmp_path: Path, monkeypatch,
                                                                  signum, code):
    """Ctrl-C or SIGTERM (a cluster's preemption) while the test split is evaluated: it stops
    after the part of the evaluation running then (not raised inside JAX's calls, where it
    could be swallowed or crash the exit), and the trained run stays complete, with its
    checkpoints; only the test figures are missing."""
    from clirunner import nntrain

    from nntrain.train.fit import Fitter
    from nntrain.train.programs import Programs

    chunks, evaluate_test, eval_chunk = [], Fitter.evaluate_test, Programs.eval_chunk

    def interrupted(self):
        os.kill(os.getpid(), signum)  # noted by the handler, acted on after the first chunk
        chunks.clear()  # the validation's
        figures = evaluate_test(self)
        chunks.append(figures)  # reached: the signal raised nothing into the evaluation
        return figures

    def counted(self, k):
        chunks.append(k)
        return eval_chunk(self, k)

    monkeypatch.setattr(Fitter, "evaluate_test", interrupted)
    monkeypatch.setattr(Programs, "eval_chunk", counted)
    config = tmp_path / "short.yaml"
    config.write_text(TINY.read_text().replace("epochs: 4", "epochs: 2"))
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == code, result.output
    assert len(chunks) == 2 and chunks[1] is None  # one chunk evaluated, then stopped
    out = " ".join(result.output.split())
    assert f"Stopped ({signal.Signals(signum).name}) in the test evaluation: training is " \
        "complete, the test split was not evaluated. Test figures: nntrain evaluate" in out
    run = _run(tmp_path)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and "test" not in metrics
    assert (run / "checkpoints" / "best").is_dir() and (run / "checkpoints" / "last").is_dir()


def test_a_ctrl_c_after_the_command_finished_breaks_no_clean_up():
    """Once the command is done, Ctrl-C is ignored: JAX's exit handlers run whole (a
    KeyboardInterrupt in them printed a traceback after a finished run)."""
    late = ("import atexit, os, signal, sys; from nntrain.cli import main; "
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT)); "
            "sys.argv = ['nntrain', '--version']; main()")
    done = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "Exception ignored" not in done.stderr


def test_a_signal_in_the_last_part_of_the_test_evaluation_keeps_its_figures(
        tmp_path: Path, monkeypatch):
    """A test split evaluated in one part: a Ctrl-C that comes while it runs is too late to
    skip anything, so the figures are kept; the exit code still says it came."""
    from clirunner import nntrain

    from nntrain.train.fit import Fitter

    evaluate_test = Fitter.evaluate_test

    def interrupted(self):
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate_test(self)

    monkeypatch.setattr(Fitter, "evaluate_test", interrupted)
    config = tmp_path / "short.yaml"
    config.write_text(TINY.read_text().replace("epochs: 4", "epochs: 1"))
    result = nntrain("fit", str(config), "--set", "data.synthetic.test_samples=8", cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert "SIGINT: skipping the rest of the test evaluation" in result.output
    metrics = json.loads((_run(tmp_path) / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "accuracy"}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_run_is_set_up_leaves_nothing(tmp_path: Path, monkeypatch, signum,
                                                          code):
    """Ctrl-C or SIGTERM after the run folder is made, before training: noted (not lost in
    a callback), then acted on: the folder is removed, exit 128 + the signal."""
    import os

    from clirunner import nntrain

    from nntrain.train.fit import Fitter

    made = Fitter.__init__

    def signalled(self, *args, **kwargs):
        made(self, *args, **kwargs)
        os.kill(os.getpid(), signum)  # while JAX has just compiled and set up
        time.sleep(0.05)

    monkeypatch.setattr(Fitter, "__init__", signalled)
    result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == code, result.output
    assert "Interrupted before training started: nothing was kept" in result.output
    assert not (tmp_path / "runs").exists()  # nor the folders made for the run
    kept = tmp_path / "runs" / "other" / "notes.txt"  # folders that hold more stay
    kept.parent.mkdir(parents=True)
    kept.write_text("mine")
    assert nntrain("fit", str(TINY), cwd=tmp_path).exit_code == code
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == \
        ["runs", "runs/other", "runs/other/notes.txt"]


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path: Path):
    from clirunner import nntrain

    config = _config(tmp_path)
    assert nntrain("fit", str(config), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    run = _run(tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "nntrain", "fit", "--resume", str(run),
                              "--epochs", "30", "-q"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        started = (run / "run.json").stat().st_mtime_ns
        while time.monotonic() < deadline and (run / "run.json").stat().st_mtime_ns == started:
            time.sleep(0.01)  # run.json says `running` once the first has the run
        second = nntrain("fit", "--resume", str(run), "--epochs", "30", cwd=tmp_path)
        assert second.exit_code == 2, second.output
        assert f"{run} is being trained by another process" in " ".join(second.output.split())
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    # once the first is done, the run is free again
    again = nntrain("fit", "--resume", str(run), "--epochs", "30", "-q", cwd=tmp_path)
    assert again.exit_code == 0, again.output


def test_ctrl_c_while_jax_is_imported_is_not_lost(tmp_path: Path, monkeypatch):
    """A KeyboardInterrupt raised inside JAX's import can be swallowed by its gc callback,
    and the run trained on to the end: the signal is noted from before that import."""
    from clirunner import nntrain

    from nntrain import commands

    configured = commands.configure_jax

    def signalled():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        configured()

    monkeypatch.setattr(commands, "configure_jax", signalled)
    result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert "Interrupted before training started" in result.output
    assert not list(tmp_path.glob("runs/*/*"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_config_is_read_stops_with_its_code(tmp_path: Path, monkeypatch,
                                                                signum, code):
    """The first seconds (JAX imported, the config read): SIGTERM exits 143 as it does later,
    with the same message, and nothing is made."""
    from clirunner import nntrain

    from nntrain import commands

    read = commands.load_config
    sent = []

    def signalled(*args, **kwargs):
        if not sent:  # once: a second Ctrl-C stops at once, by design
            sent.append(signum)
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
        return read(*args, **kwargs)

    monkeypatch.setattr(commands, "load_config", signalled)
    result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == code, result.output
    assert "Interrupted before training started: nothing was kept" in result.output
    assert not (tmp_path / "runs").exists()
    # resuming a finished run (nothing to train): the signal still decides the exit code
    monkeypatch.setattr(commands, "load_config", read)
    assert nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    run = _run(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    sent.clear()
    monkeypatch.setattr(commands, "load_config", signalled)
    result = nntrain("fit", "--resume", str(run), cwd=tmp_path)
    assert result.exit_code == code, result.output
    assert f"Interrupted before training started: {run} is as it was" in \
        " ".join(result.output.split())
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    # a run early stopping ended (nothing to resume either)
    info = json.loads((run / "run.json").read_text())
    info.update(status="stopped", stop_reason="early stopping: val_loss did not improve")
    (run / "run.json").write_text(json.dumps(info))
    found = commands.resolve_run

    def found_then_signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        return found(*args, **kwargs)

    monkeypatch.setattr(commands, "resolve_run", found_then_signalled)
    result = nntrain("fit", "--resume", str(run), cwd=tmp_path)
    assert result.exit_code == code, result.output


def test_a_run_is_marked_running_before_its_programs_are_made(tmp_path: Path, monkeypatch):
    """A kill -9 while the Fitter is made (compiling, placing data) leaves a run that
    `runs` can tell is killed: run.json already says running, with this process's id."""
    from clirunner import nntrain

    from nntrain.train import fit

    seen = {}

    class Killed(fit.Fitter):
        def __init__(self, setup, dataset, run, *args, **kwargs):
            seen.update(json.loads((run.path / "run.json").read_text()))
            raise KeyboardInterrupt

    monkeypatch.setattr(fit, "Fitter", Killed)
    result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == 130, result.output
    assert seen["status"] == "running" and seen["pid"] == os.getpid()
