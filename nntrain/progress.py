"""What a person sees while training: a bar per epoch, one line per finished epoch; or, for
programs (`fit --log-format json`), one JSON object per finished epoch on stdout."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nntrain.consoles import write_stdout

REFRESH_SECONDS = 0.1  # the bar's own refresh rate; more updates would only cost time


MISSING = "—"


def fmt_number(value: Any) -> str:
    """A figure as people read it: 4 decimals, or 4 significant digits for very large or
    small ones (a loss of 5.685e+10, not 56854280903.2679)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING if value is None else str(value)
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}"


def format_logs(logs: dict[str, float], skip: tuple[str, ...] = ()) -> str:
    parts = []
    for name, value in logs.items():
        if name in skip:
            continue
        parts.append(f"{name} {value:.4g}" if name == "learning_rate"
                     else f"{name} {fmt_number(value)}")
    return "  ".join(parts)


def json_value(value):
    """A value as strict JSON allows: non-finite floats become null, numpy scalars plain."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def significant(value, digits: int = 6):
    """A float to the 6 significant digits history.csv keeps (0.009999999776 -> 0.01)."""
    return float(f"{value:.{digits}g}") if isinstance(value, float) else value


emitted: list[str] = []  # the events written in this command (the CLI resets it)


def emit_json(record: dict) -> None:
    """One JSON object on one line of stdout, flushed at once (a reader may be waiting)."""
    write_stdout(json.dumps(json_value(record), allow_nan=False) + "\n")
    emitted.append(str(record.get("event", "epoch")))


class EpochProgress:
    """A live bar for one epoch (only on a terminal), then a summary line. With `json_lines`,
    the summary is a JSON object on stdout instead (`console` should then be stderr's, where
    the live bar still shows on a terminal unless `quiet`)."""

    def __init__(self, console: Console, epoch: int, epochs: int, steps: int,
                 batch_size: int, quiet: bool = False, json_lines: bool = False,
                 compiling: bool = False) -> None:
        self.console = console
        self.epoch = epoch
        self.json_lines = json_lines
        self.label = f"Epoch {epoch + 1}/{epochs}"
        self.steps = steps
        self.done = steps
        self.batch_size = batch_size
        self.quiet = quiet
        self.start = time.perf_counter()
        self._progress: Progress | None = None
        self._last_update = 0.0
        # the first steps of a process wait for XLA to compile: say so instead of a still bar
        self._compiling = compiling

    def __enter__(self) -> EpochProgress:
        if not self.quiet and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[logs]}"),
                console=self.console,
                transient=True,
                auto_refresh=False,  # redrawn from update(): no thread competing for the GIL
            )
            self._progress.start()
            label = f"{self.label} [dim](compiling)[/]" if self._compiling else self.label
            self._task = self._progress.add_task(label, total=self.steps, logs="", rate="")
            self._progress.refresh()
        return self

    def update(self, steps_done: int, logs: dict[str, float]) -> None:
        self.done = steps_done
        now = time.perf_counter()
        if self._compiling and self._progress is not None:
            self._compiling = False
            self._progress.update(self._task, description=self.label)
        if self._progress is not None and now - self._last_update >= REFRESH_SECONDS:
            self._last_update = now
            elapsed = max(now - self.start, 1e-9)
            rate = f"{steps_done * self.batch_size / elapsed:,.0f} samples/s"
            self._progress.update(self._task, completed=steps_done, logs=format_logs(logs),
                                  rate=rate, refresh=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def finish(self, logs: dict[str, float], seconds: float, notes: str = "") -> None:
        if self.json_lines:  # printed even with quiet: it is the program's output
            # history.csv's figures: float32 sums carry ~7 digits, not the 17 of their repr
            emit_json({"epoch": self.epoch + 1, **{k: significant(v) for k, v in logs.items()},
                       "seconds": round(seconds, 3)})
            return
        if self.quiet:
            return
        # the steps run: fewer than the epoch's when a callback stopped training inside it
        line = f"[bold]{self.label}[/]  {self.done}/{self.steps}  {seconds:.2f}s  " \
               f"{format_logs(logs)}"
        self.console.print(line + (f"  [green]{notes}[/]" if notes else ""), highlight=False,
                           soft_wrap=True)
