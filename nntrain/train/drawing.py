"""history.png, redrawn during training by a process of its own.

A drawing is about 0.2 s of pure Python in matplotlib (0.8 s the first time, with its
import). On a thread of the training process it holds the GIL, and every time the training
loop hands the GIL over while the device computes, it waits up to Python's 5 ms switch
interval to get it back: on a GPU, where an epoch of fashion_mlp is 0.07 s of device time,
the epochs a drawing overlapped took 2-5x as long. In a process of its own it costs the
training process nothing but a line written to a pipe.

The training process starts it before its first epoch, so that matplotlib's import overlaps
the compiling, and asks for a drawing after each history.csv it writes (`request`); the
drawing process reads history.csv when it draws, skips requests that pile up meanwhile, and
spends at most ~3% of the time drawing (`BUDGET`): with epochs of milliseconds, drawing every
epoch would keep a core busy. `close` asks for the last history and waits for it.

    python -m nntrain.train.drawing RUN_DIR TITLE   (lines on stdin: draw; EOF: draw, exit)
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

BUDGET = 30  # wait this many times the last drawing's duration before the next one
CLOSE_TIMEOUT = 60.0  # seconds for the last drawing before the training process gives up


class DrawingFailed(OSError):
    """history.png could not be drawn (the message is the drawing process's)."""


class HistoryDrawer:
    """The training side: starts the drawing process on the first request."""

    def __init__(self, run_dir: Path, title: str) -> None:
        self.run_dir, self.title = Path(run_dir), title
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the drawing process, which imports matplotlib while training compiles."""
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "nntrain.train.drawing", str(self.run_dir), self.title],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=_finding_this_package(),
                start_new_session=True)  # Ctrl-C reaches training, which ends it by EOF

    def request(self) -> None:
        """Ask for history.png to show history.csv as it is now (it is drawn soon, or, when
        drawings come too often, with a later history)."""
        self.start()
        try:
            self._process.stdin.write(b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:  # it failed: `close` says why
            pass

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait for the drawing of the last requested history; raise DrawingFailed if the
        drawing process failed."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            _, err = process.communicate(timeout=timeout)  # closes stdin: the last drawing
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise DrawingFailed(f"drawing {self.run_dir / 'history.png'} took over "
                                f"{timeout:.0f} s and was stopped") from None
        if process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise DrawingFailed(f"cannot draw {self.run_dir / 'history.png'}: "
                                f"{lines[-1] if lines else f'exit {process.returncode}'}")


def _finding_this_package() -> dict[str, str]:
    """The environment, with this nntrain first on the path (it may have been imported from
    a folder the child would not look in)."""
    import nntrain

    root = str(Path(nntrain.__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def serve(run_dir: Path, title: str, requests=None) -> None:
    """The drawing process: draw on request, at most BUDGET-limited, and once more at EOF."""
    from nntrain.plotting import plot_history
    from nntrain.runs import Run

    requests = requests if requests is not None else sys.stdin.buffer
    import matplotlib.figure  # noqa: F401  (imported before the first drawing is timed)

    pending, next_allowed = False, -math.inf
    while True:
        wait = None if not pending else max(0.0, next_allowed - time.perf_counter())
        readable, _, _ = select.select([requests], [], [], wait)
        if readable:
            if not os.read(requests.fileno(), 4096):  # EOF: training is over
                if pending:
                    plot_history(Run(run_dir).history(), run_dir / "history.png", title)
                return
            pending = True
            continue
        start = time.perf_counter()
        plot_history(Run(run_dir).history(), run_dir / "history.png", title)
        pending, now = False, time.perf_counter()
        next_allowed = now + BUDGET * (now - start)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # training decides when drawing stops
    if hasattr(os, "nice"):
        os.nice(19)  # only the CPU time training leaves over
    run_dir, title = Path(argv[0]), argv[1]
    try:
        serve(run_dir, title)
    except Exception as e:  # one line for the training process to report
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
