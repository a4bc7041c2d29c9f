"""Nothing lost: `nntrain fit` killed with SIGKILL at random moments (including inside
checkpoint writes) always resumes, and ends with exactly the weights and history of a run that
was never interrupted. A damaged latest checkpoint falls back to the previous one."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from clirunner import nntrain
from runfiles import history_rows, only_run
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
KILLS = 20
EPOCHS = 60


def _config(tmp_path: Path) -> Path:
    # short epochs, many of them, and a checkpoint of a few MB: kills land in startup,
    # training, and checkpoint writes
    config = tmp_path / "faults.yaml"
    config.write_text(TINY.read_text()
                      .replace("samples: 600", "samples: 2000")
                      .replace("input: [4, 4]", "input: [16, 16]")
                      .replace("units: 16", "units: 512")
                      .replace("epochs: 4", f"epochs: {EPOCHS}")
                      .replace("patience: 3", "patience: 1000"))
    return config


def _checkpoint_arrays(run: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("last", "best"):
        for key, value in load_file(str(run / "checkpoints" / name /
                                        "arrays.safetensors")).items():
            arrays[f"{name}/{key}"] = value
    return arrays


def _phase(run: Path | None, pid: int) -> str:
    """Where the kill of process `pid` landed, read from what it left on disk (a killed
    writer's folder is named .tmp-<name>-<pid>; earlier kills may have left theirs)."""
    folder = None if run is None else run / "checkpoints"
    if folder is None or not folder.is_dir():
        return "before the first checkpoint"
    names = {p.name for p in folder.iterdir()}
    if f".tmp-last-{pid}" in names or f".tmp-best-{pid}" in names:
        return "writing a checkpoint"
    if any(n.startswith(".trash-") for n in names):
        return "removing the previous checkpoint"
    if "last" not in names:
        return "between a checkpoint's renames" if "last.prev" in names else \
            "before the first checkpoint"
    return "training or startup"


def _writing(run: Path | None, pid: int) -> bool:
    return run is not None and (run / "checkpoints" / f".tmp-last-{pid}").exists()


def _training_seconds(process: subprocess.Popen, work: Path) -> float:
    """How long `process` runs after its run directory appears: the span random kills are
    drawn from, so that they land inside training on a slow machine and a fast one alike."""
    appeared = None
    while process.poll() is None:
        if appeared is None and list(work.glob("runs/*/*/run.json")):
            appeared = time.monotonic()
        time.sleep(0.002)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert appeared is not None, "the run directory appeared only after the run had finished"
    return time.monotonic() - appeared


def _wait_and_kill(process: subprocess.Popen, work: Path, rng: random.Random,
                   in_write: bool, span: float) -> str | None:
    """Kill `process` at a random moment (or at a random point of a checkpoint write); the
    phase it was killed in, or None if it finished first."""
    start = time.monotonic()
    run = None
    delay = rng.uniform(0.02, 0.8) * span
    writes_to_skip = rng.randrange(2)
    was_writing = False
    while process.poll() is None and time.monotonic() - start < 120:
        if run is None:
            found = list(work.glob("runs/*/*/run.json"))
            run = found[0].parent if found else None
            if run is None:  # a kill before the run directory exists leaves nothing to resume
                start = time.monotonic()
        if in_write:
            writing = _writing(run, process.pid)
            if writing and not was_writing:
                if writes_to_skip == 0:
                    time.sleep(rng.uniform(0, 0.004))
                    break
                writes_to_skip -= 1
            was_writing = writing
            time.sleep(0.0005)
        else:
            if run is not None and time.monotonic() - start >= delay:
                break
            time.sleep(0.002)
    if process.poll() is not None:
        return None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return _phase(run, process.pid)


def _killed_chain(config: Path, work: Path, rng: random.Random, phases: list[str],
                  span: float) -> None:
    """Start `fit`, then kill it and `fit --resume` it again and again, until KILLS kills in
    all or the run completes; then resume once more, to the end."""
    fit = [sys.executable, "-m", "nntrain", "fit"]
    command = [*fit, str(config), "-q"]
    while len(phases) < KILLS:
        process = subprocess.Popen(command, cwd=work, env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        phase = _wait_and_kill(process, work, rng, in_write=len(phases) % 2 == 1, span=span)
        errors = process.stderr.read()
        process.stderr.close()
        if phase is None:  # it finished between kills (a fast moment, or a write missed on
            # a loaded machine): a whole run, checked as the others are; a new chain goes on
            assert process.returncode == 0, errors
            return
        phases.append(phase)
        command = [*fit, "--resume", str(only_run(work)), "-q"]  # every later start resumes
    resumed = subprocess.run(command, cwd=work, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr


def test_sigkill_at_20_random_moments_then_resume_is_bit_identical(tmp_path: Path):
    config = _config(tmp_path)
    whole = tmp_path / "whole"
    whole.mkdir()
    # twice: the first run fills the compilation cache every later start reads, so the
    # second one times the span that resumed runs see
    for _ in range(2):
        for old in whole.iterdir():
            shutil.rmtree(old)
        span = _training_seconds(subprocess.Popen(
            [sys.executable, "-m", "nntrain", "fit", str(config), "-q"], cwd=whole, env=ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), whole)
    reference = only_run(whole)
    expected_arrays = _checkpoint_arrays(reference)

    rng = random.Random(20261125)
    phases: list[str] = []
    chains = 0
    while len(phases) < KILLS:
        chains += 1
        assert chains <= 3 * KILLS, f"runs kept finishing before they could be killed: {phases}"
        killed = tmp_path / f"killed-{chains}"
        killed.mkdir()
        _killed_chain(config, killed, rng, phases, span)

        run = only_run(killed)
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
        assert len(history_rows(run)) == EPOCHS
        assert history_rows(run) == history_rows(reference)
        arrays = _checkpoint_arrays(run)
        assert arrays.keys() == expected_arrays.keys()
        for key, value in arrays.items():
            assert value.dtype == expected_arrays[key].dtype, key
            assert np.array_equal(value, expected_arrays[key]), key
        # nothing half-written is left behind
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last",
                                                                           "last.prev"]
    print("\n".join(f"kill {i + 1}: {p}" for i, p in enumerate(phases)))
    # timing decides the exact mix; the write-targeted kills land inside writes
    assert phases.count("writing a checkpoint") >= 5, phases
    assert phases.count("training or startup") >= 1, phases


def test_resume_rewrites_records_behind_the_checkpoint(tmp_path: Path):
    """Killed after the last epoch's checkpoint but before its records: the resumed run
    takes the history from the checkpoint, and its records catch up."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for folder in (whole, killed):
        folder.mkdir()
        assert nntrain("fit", str(TINY), "-q", cwd=folder).exit_code == 0
    run = only_run(killed)
    history = run / "history.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running",
                                              "epochs_completed": 3}))
    assert len(history_rows(run)) == 3

    result = nntrain("fit", "--resume", str(run), "-q", cwd=killed)
    assert result.exit_code == 0, result.output
    assert history_rows(run) == history_rows(only_run(whole))
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 4
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["epochs_completed"]) == ("completed", 4)


def _as_killed(run: Path) -> None:
    """run.json as a kill in the last moments leaves it: still `running`, by a dead process
    (resuming a run recorded as complete, for no more epochs, reads nothing)."""
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running", "pid": 99999999}))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_falls_back_from_a_damaged_checkpoint_and_ends_the_same(tmp_path: Path):
    whole, damaged = tmp_path / "whole", tmp_path / "damaged"
    for folder in (whole, damaged):
        folder.mkdir()
        assert nntrain("fit", str(TINY), "-q", cwd=folder).exit_code == 0
    run = only_run(damaged)
    arrays = run / "checkpoints" / "last" / "arrays.safetensors"
    _flip_last_byte(arrays)
    _as_killed(run)

    result = nntrain("fit", "--resume", str(run), "-q", cwd=damaged)
    assert result.exit_code == 0, result.output
    assert f"damaged checkpoint {arrays}: checksum mismatch" in result.output
    assert "resuming from the previous checkpoint" in result.output
    assert (run / "checkpoints" / "last.damaged" / "arrays.safetensors").exists()
    # the last epoch was trained again from the previous checkpoint, to the same weights
    assert history_rows(run) == history_rows(only_run(whole))
    a, b = _checkpoint_arrays(run), _checkpoint_arrays(only_run(whole))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_evaluate_and_predict_name_a_damaged_checkpoint(tmp_path: Path):
    assert nntrain("fit", str(TINY), "-q", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    arrays = run / "checkpoints" / "best" / "arrays.safetensors"
    _flip_last_byte(arrays)
    for command in (["evaluate", str(run)], ["predict", str(run), "--limit", "2"]):
        result = nntrain(*command)
        assert result.exit_code == 2, result.output
        assert f"damaged checkpoint {arrays}: checksum mismatch" in result.output
        said = " ".join(result.output.split())
        assert "--checkpoint last" in said and f"remove {arrays.parent} and continue training " \
            f"with `nntrain fit --resume {run}`" in said  # what the resume itself asks for
        assert "Traceback" not in result.output
    assert nntrain("evaluate", str(run), "--checkpoint", "last").exit_code == 0


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_over(tmp_path: Path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for folder in (whole, killed):
        folder.mkdir()
        assert nntrain("fit", str(TINY), "-q", cwd=folder).exit_code == 0
    run = only_run(killed)
    for name in ("checkpoints", "history.csv", "metrics.json"):  # as if killed in epoch 1
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "epochs_completed": None}))
    result = nntrain("fit", "--resume", str(run), "-q", cwd=killed)
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet" in result.output
    assert history_rows(run) == history_rows(only_run(whole))
    a, b = _checkpoint_arrays(run), _checkpoint_arrays(only_run(whole))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_with_a_damaged_best_checkpoint_says_what_to_do(tmp_path: Path):
    assert nntrain("fit", str(TINY), "-q", "--epochs", "2", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    arrays = run / "checkpoints" / "best" / "arrays.safetensors"
    _flip_last_byte(arrays)
    _as_killed(run)
    result = nntrain("fit", "--resume", str(run), "-q", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert f"damaged checkpoint {arrays}: checksum mismatch" in result.output
    assert f"remove {run / 'checkpoints' / 'best'} to continue without them" in result.output
    shutil.rmtree(run / "checkpoints" / "best")
    assert nntrain("fit", "--resume", str(run), "-q", cwd=tmp_path).exit_code == 0


def _out_of_memory(*args, **kwargs):
    import jax

    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory allocating 36002321732 bytes.")


def test_out_of_memory_is_said_as_a_size_to_change_and_keeps_no_untrained_run(
        tmp_path: Path, monkeypatch):
    """XLA's allocation failure, in training or in `evaluate`: one message naming the fix,
    exit 2, no traceback; a run that trained no epoch is not kept."""
    from nntrain.train.fit import Fitter

    with monkeypatch.context() as patch:
        patch.setattr(Fitter, "fit", _out_of_memory)
        result = nntrain("fit", str(TINY), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "out of memory: RESOURCE_EXHAUSTED: Out of memory allocating 36002321732 bytes" \
        in result.output and "fit.batch_size smaller" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("runs/*/*"))
    assert nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr("nntrain.train.programs.Programs.evaluate", _out_of_memory)
        result = nntrain("evaluate", str(run), "--split", "validation", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "out of memory" in result.output and "Traceback" not in result.output
