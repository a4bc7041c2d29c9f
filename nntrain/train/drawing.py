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
epoch would keep a core busy. `close` asks for the last history and waits for it. A drawing
that fails is reported, never a failure of training: history.png is a view of history.csv.

    main([RUN_DIR, TITLE])   (lines on stdin: draw; EOF: draw if asked, exit)
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET = 30  # wait this many times the last drawing's duration before the next one
CLOSE_TIMEOUT = 60.0  # seconds for the last drawing before the training process gives up


# The child imports exactly what this process imports: its sys.path, not the working
# folder's modules (`-P`), which could shadow the standard library's.
CHILD = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
         "from nntrain.train.drawing import main; sys.exit(main(sys.argv[2:]))")


class HistoryDrawer:
    """The training side. `start` and `close` belong to the training thread; `request` may
    come from another (the checkpoint writer)."""

    def __init__(self, run_dir: Path, title: str) -> None:
        self.run_dir, self.title = Path(run_dir), title
        self._process: subprocess.Popen | None = None
        self._errors: Any = None

    def start(self) -> None:
        """Start the drawing process, which imports matplotlib while training compiles."""
        if self._process is not None:
            return
        # a file, not a pipe, which warnings could fill; closed by `close`
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-c", CHILD, json.dumps(sys.path), str(self.run_dir),
             self.title],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors,
            # its own process group: Ctrl-C in the terminal reaches training alone, which
            # ends it by closing its stdin (a new session would escape `nice` under Linux's
            # autogroup scheduling)
            process_group=0)

    def request(self) -> None:
        """Ask for history.png to show history.csv as it is now (it is drawn soon, or, when
        drawings come too often, with a later history). Before `start`: nothing."""
        process = self._process
        if process is None:
            return
        try:
            process.stdin.write(b"\n")
            process.stdin.flush()
        except (OSError, ValueError):  # it failed (`close` says why), or it is closed
            pass

    def close(self, timeout: float = CLOSE_TIMEOUT) -> str | None:
        """Wait for the drawing of the last requested history. Returns why history.png could
        not be drawn, or None."""
        process, errors, self._process, self._errors = self._process, self._errors, None, None
        if process is None:
            return None
        try:
            process.communicate(timeout=timeout)  # closes stdin: the last drawing
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            errors.close()
            return f"drawing it took over {timeout:.0f} s and was stopped"
        errors.seek(0)
        lines = errors.read().decode(errors="replace").strip().splitlines()
        errors.close()
        if process.returncode == 0:
            return None
        return lines[-1] if lines else f"the drawing process ended with {process.returncode}"


def serve(run_dir: Path, title: str, requests=None) -> None:
    """The drawing process: draw on request, at most BUDGET-limited, and once more at EOF."""
    from nntrain.plotting import plot_history
    from nntrain.runs import Run

    requests = requests if requests is not None else sys.stdin.buffer
    import matplotlib.figure  # noqa: F401  (imported before the first drawing is timed)

    def draw() -> None:
        plot_history(Run(run_dir).history(), run_dir / "history.png", title)

    pending, next_allowed = False, -math.inf
    while True:
        wait = None if not pending else max(0.0, next_allowed - time.perf_counter())
        readable, _, _ = select.select([requests], [], [], wait)
        if readable:
            if not os.read(requests.fileno(), 4096):  # EOF: training is over
                if pending:
                    draw()
                return
            pending = True
            continue
        start = time.perf_counter()
        draw()
        pending, now = False, time.perf_counter()
        next_allowed = now + BUDGET * (now - start)


def main(argv: list[str]) -> int:
    for number in (signal.SIGINT, signal.SIGTERM):  # a job's stop signal reaches every
        signal.signal(number, signal.SIG_IGN)  # process: training decides when drawing ends
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
