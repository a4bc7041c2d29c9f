"""history.png's drawing process: what it draws, how often, and how its failures surface."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from clirunner import nntrain

from nntrain import plotting
from nntrain.train import drawing
from nntrain.train.fit import write_history_csv

PNG = b"\x89PNG\r\n\x1a\n"
TINY = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"


def _history(epochs: int) -> list[dict[str, float]]:
    return [{"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e, "seconds": 0.1}
            for e in range(1, epochs + 1)]


def test_requests_that_pile_up_are_drawn_once_with_the_latest_history(tmp_path, monkeypatch):
    drawn: list[int] = []
    first_drawn = threading.Event()

    def slow_plot(history, path, title=""):
        time.sleep(0.2)  # the budget then allows the next drawing 30 x 0.2 = 6 s later
        drawn.append(len(history))
        first_drawn.set()

    monkeypatch.setattr(plotting, "plot_history", slow_plot)
    read, write = os.pipe()
    with os.fdopen(read, "rb", buffering=0) as requests:
        server = threading.Thread(target=drawing.serve, args=(tmp_path, "t", requests))
        write_history_csv(tmp_path / "history.csv", _history(1))
        server.start()
        os.write(write, b"\n")  # epoch 1: drawn at once
        assert first_drawn.wait(timeout=30)
        for epochs in range(2, 6):  # epochs 2-5 inside the budget: not drawn one by one
            write_history_csv(tmp_path / "history.csv", _history(epochs))
            os.write(write, b"\n")
        os.close(write)  # training is over: the last history is drawn, then it ends
        server.join(timeout=10)
    assert not server.is_alive()
    assert drawn == [1, 5]


def test_no_request_no_drawing(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "plot_history", lambda *a, **k: pytest.fail("drew"))
    read, write = os.pipe()
    os.close(write)
    with os.fdopen(read, "rb", buffering=0) as requests:
        drawing.serve(tmp_path, "t", requests)
    assert not (tmp_path / "history.png").exists()


def test_the_drawing_process_draws_the_run_and_ends_on_close(tmp_path: Path):
    write_history_csv(tmp_path / "history.csv", _history(3))
    drawer = drawing.HistoryDrawer(tmp_path, "three epochs")
    drawer.request()  # before start: nothing to ask
    assert drawer._process is None
    drawer.start()
    drawer.request()
    process = drawer._process
    # its own process group: Ctrl-C in the terminal reaches training, which ends it by EOF
    assert os.getpgid(process.pid) != os.getpgid(0)
    assert drawer.close() is None
    assert process.returncode == 0
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG
    assert drawer.close() is None  # a second close has nothing to wait for


def test_it_imports_what_training_imports_not_the_working_folders_modules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "csv.py").write_text("raise SystemExit('the wrong csv')\n")  # a user's file
    monkeypatch.chdir(project)
    write_history_csv(tmp_path / "history.csv", _history(2))
    drawer = drawing.HistoryDrawer(tmp_path, "")
    drawer.start()
    drawer.request()
    assert drawer.close() is None
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG


def test_a_stop_signal_to_every_process_leaves_the_drawing_to_training(tmp_path: Path):
    """Slurm's scancel and systemd signal every process of a job: training stops cleanly and
    closes the drawing process, which draws the last history."""
    write_history_csv(tmp_path / "history.csv", _history(2))
    drawer = drawing.HistoryDrawer(tmp_path, "")
    drawer.start()
    time.sleep(0.5)  # past its start, where it sets its signal handlers
    os.kill(drawer._process.pid, signal.SIGTERM)
    os.kill(drawer._process.pid, signal.SIGINT)
    drawer.request()
    assert drawer.close() is None
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG


def test_a_failed_drawing_is_reported_with_its_cause(tmp_path: Path):
    write_history_csv(tmp_path / "history.csv", _history(2))
    (tmp_path / "history.png").mkdir()  # cannot be replaced by a file
    drawer = drawing.HistoryDrawer(tmp_path, "")
    drawer.start()
    drawer.request()
    assert drawer.close().startswith("IsADirectoryError")


def test_close_without_a_start_starts_nothing(tmp_path: Path):
    drawer = drawing.HistoryDrawer(tmp_path, "")
    assert drawer.close() is None
    assert drawer._process is None and not (tmp_path / "history.png").exists()


def test_fit_completes_and_warns_when_history_png_cannot_be_drawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    close = drawing.HistoryDrawer.close
    monkeypatch.setattr(drawing.HistoryDrawer, "close",
                        lambda self, *a: close(self, *a) or "OSError: no space left")
    result = nntrain("fit", str(TINY), "--epochs", "2", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: history.png was not drawn: OSError: no space left" in result.output
    assert "nntrain plot" in result.output
    run = next((tmp_path / "runs").glob("*/*"))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
