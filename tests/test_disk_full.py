"""A full disk while training: one clear message (what, where, the fix), exit 2, nothing
half-written, and the last good checkpoint resumes to the same result once space is free."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from clirunner import nntrain
from runfiles import history_rows, only_run
from safetensors.numpy import load_file

from nntrain import checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"


def _assert_same_result(run: Path, reference: Path) -> None:
    assert history_rows(run) == history_rows(reference)
    for name in ("last", "best"):
        a = load_file(str(run / "checkpoints" / name / "arrays.safetensors"))
        b = load_file(str(reference / "checkpoints" / name / "arrays.safetensors"))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), name


def _no_leftovers(run: Path) -> None:
    names = [p.name for p in run.iterdir()] + [p.name for p in (run / "checkpoints").iterdir()]
    assert not [n for n in names if n.startswith(".") and n != ".metrics.json.lock"], names


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("whole")
    assert nntrain("fit", str(TINY), "-q", cwd=work).exit_code == 0
    return only_run(work)


def _fill_disk_after(monkeypatch, marker: str, writes: int) -> None:
    """From the (writes+1)-th write of a file whose path contains `marker`, fsync reports
    ENOSPC, as it does when the device filled up while the data sat in the page cache."""
    real = os.fsync
    seen = 0

    def fsync(fd: int) -> None:
        nonlocal seen
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if marker in path and not os.path.isdir(path):
            seen += 1
            if seen > writes:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("marker, what, name", [
    ("/checkpoints/.tmp-last-", "the checkpoint", "checkpoints/last"),
    ("/checkpoints/.tmp-best-", "the checkpoint", "checkpoints/best"),
    ("/.history.csv.", "the file", "history.csv"),
    ("/.metrics.json.", "the file", "metrics.json"),
    ("/.run.json.", "the file", "run.json"),
])
def test_full_disk_is_reported_and_the_run_resumes(tmp_path: Path, monkeypatch, reference,
                                                   marker, what, name):
    # fill the disk in epoch 2: a checkpoint writes two files, run.json is written twice
    # before the first epoch ends
    _fill_disk_after(monkeypatch, marker, 1 if name.endswith((".csv", "metrics.json")) else
                     2 if name.startswith("checkpoints") else 3)
    result = nntrain("fit", str(TINY), "-q", cwd=tmp_path)
    monkeypatch.undo()  # space is free again
    run = only_run(tmp_path)
    shown = run.relative_to(tmp_path)  # as the user gave it: runs/ under the working folder

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"no space left on the device while writing {what} {shown / name}" in result.output
    assert f"free space on the disk that holds {(shown / name).parent}" in result.output
    assert f"nntrain fit --resume {shown}" in result.output
    _no_leftovers(run)
    resumable = checkpoint.load_for_resume(run / "checkpoints" / "last")
    assert resumable.warning is None and resumable.meta["epoch"] >= 1

    resumed = nntrain("fit", "--resume", str(run), "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    _assert_same_result(run, reference)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


def test_a_really_full_disk(tmp_path: Path):
    """On a 1 MiB tmpfs the second epoch's checkpoint does not fit."""
    config = tmp_path / "wide.yaml"
    config.write_text(TINY.read_text().replace("units: 16", "units: 2048"))
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("needs root and tmpfs mounts")
    try:
        result = nntrain("fit", str(config), "-q", "--runs-dir", str(disk / "runs"))
        assert result.exit_code == 2, result.output
        assert "no space left on the device while writing" in result.output
        assert "Traceback" not in result.output
        run = only_run(disk)
        _no_leftovers(run)
        assert checkpoint.load_for_resume(run / "checkpoints" / "last").meta["epoch"] >= 1

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = nntrain("fit", "--resume", str(run), "-q")
        assert resumed.exit_code == 0, resumed.output
        whole = tmp_path / "whole"
        whole.mkdir()
        assert nntrain("fit", str(config), "-q", cwd=whole).exit_code == 0
        _assert_same_result(run, only_run(whole))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_full_disk_while_the_csv_logger_appends(tmp_path: Path, monkeypatch):
    config = tmp_path / "logged.yaml"
    config.write_text(TINY.read_text().replace(
        "    - model_checkpoint:",
        "    - csv_logger: {filename: log.csv}\n    - model_checkpoint:"))
    real_open = Path.open
    appends = 0

    def open_(self, mode="r", *args, **kwargs):
        nonlocal appends
        if self.name == "log.csv" and mode == "a":
            appends += 1
            if appends > 1:  # the disk fills up in epoch 2
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    monkeypatch.undo()
    run = only_run(tmp_path)
    shown = run.relative_to(tmp_path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"no space left on the device while writing the CSV log {shown / 'log.csv'}" in \
        result.output
    assert f"nntrain fit --resume {shown}" in result.output
    resumed = nntrain("fit", "--resume", str(run), "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "0", "1", "2", "3"]
