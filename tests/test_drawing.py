"""history.png's drawing process: what it draws, how often, and how its failures surface."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from nntrain import plotting
from nntrain.train import drawing
from nntrain.train.fit import write_history_csv

PNG = b"\x89PNG\r\n\x1a\n"


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
    drawer.request()
    process = drawer._process
    # its own session: Ctrl-C in the terminal reaches training, which ends it by closing
    assert os.getsid(process.pid) != os.getsid(0)
    drawer.close()
    assert process.returncode == 0
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG
    drawer.close()  # a second close has nothing to wait for


def test_a_failed_drawing_is_reported_with_its_cause(tmp_path: Path):
    write_history_csv(tmp_path / "history.csv", _history(2))
    (tmp_path / "history.png").mkdir()  # cannot be replaced by a file
    drawer = drawing.HistoryDrawer(tmp_path, "")
    drawer.request()
    with pytest.raises(drawing.DrawingFailed, match=r"cannot draw .*history\.png: \w+Error"):
        drawer.close()


def test_close_without_a_request_starts_nothing(tmp_path: Path):
    drawer = drawing.HistoryDrawer(tmp_path, "")
    drawer.close()
    assert drawer._process is None and not (tmp_path / "history.png").exists()
