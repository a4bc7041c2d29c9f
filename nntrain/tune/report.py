"""What a search leaves behind: the leaderboard (printed and leaderboard.csv), best.yaml,
tune.png and TensorBoard HPARAMS sessions. Everything here is rebuilt from the study, so
any worker (or a later `nntrain tune`) can write it again."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from nntrain.fsutil import atomic_write_bytes, atomic_write_text
from nntrain.tune import space

SHOWN_ROWS = 20  # the printed table; leaderboard.csv has every trial
_ORDER = {"complete": 0, "pruned": 1, "running": 2, "interrupted": 3, "failed": 4}


@dataclass
class Row:
    number: int
    values: dict[str, Any]
    objective: float | None
    epochs: int
    status: str  # complete | pruned | running | interrupted | failed
    run: str
    message: str = ""


def rows(trials: list[FrozenTrial], dims: list[space.Dimension], direction: str) -> list[Row]:
    """One row per trial that ran or runs, the best first: complete trials by objective, then
    pruned ones (by their best epoch), then running, interrupted and failed ones."""
    out = []
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        status = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                  TrialState.RUNNING: "running"}.get(t.state)
        if status is None:
            status = "failed" if "failure" in t.user_attrs else "interrupted"
        steps = [v for v in t.intermediate_values.values() if math.isfinite(v)]
        objective = t.value if t.state == TrialState.COMPLETE else (
            (max(steps) if direction == "max" else min(steps)) if steps else None)
        out.append(Row(t.number, space.from_params(dims, t.params), objective,
                       len(t.intermediate_values), status, t.user_attrs.get("run", ""),
                       t.user_attrs.get("failure", "")))
    sign = -1 if direction == "max" else 1
    return sorted(out, key=lambda r: (_ORDER[r.status], r.objective is None,
                                      sign * (r.objective or 0.0), r.number))


def table(board: list[Row], dims: list[space.Dimension], objective: str,
          title: str) -> Table:
    grid = Table(title=title, title_justify="left")
    grid.add_column("#", justify="right", style="dim")
    grid.add_column("trial", justify="right")
    for dim in dims:
        grid.add_column(dim.name, justify="right" if dim.kind in ("int", "float") else "left")
    grid.add_column(objective, justify="right", style="bold")
    grid.add_column("epochs", justify="right")
    grid.add_column("status")
    styles = {"complete": "green", "pruned": "yellow", "failed": "red", "interrupted": "red",
              "running": "cyan"}
    for rank, row in enumerate(board[:SHOWN_ROWS], start=1):
        grid.add_row(
            str(rank) if row.status == "complete" else "", str(row.number),
            *(space.format_value(row.values[d.name]) if d.name in row.values else "-"
              for d in dims),
            "" if row.objective is None else f"{row.objective:.4f}", str(row.epochs),
            f"[{styles[row.status]}]{row.status}[/]")
    return grid


def write_csv(path: Path, board: list[Row], dims: list[space.Dimension], objective: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *(d.name for d in dims), objective, "epochs", "status", "run",
                     "message"])
    for row in board:
        writer.writerow([row.number, *(row.values.get(d.name, "") for d in dims),
                         "" if row.objective is None else f"{row.objective:.6g}", row.epochs,
                         row.status, row.run, row.message])
    atomic_write_text(path, buffer.getvalue())


# data files a config names, relative to the config's folder
_DATA_PATHS = (("data", "source"), ("data", "train"), ("data", "validation", "path"),
               ("data", "test", "path"))


def best_config(raw: dict, dims: list[space.Dimension], values: dict[str, Any],
                config_dir: Path, folder: Path) -> dict:
    """The config as written, the best values filled in, no search section; relative data
    paths rewritten for the file's new folder."""
    data = space.apply(raw, dims, values)
    for path in _DATA_PATHS:
        found, value = space.get_path(data, path)
        if found and isinstance(value, str) and not os.path.isabs(value):
            target = (config_dir / value).resolve()
            space.set_path(data, path, os.path.relpath(target, folder.resolve()))
    return data


def write_best(path: Path, data: dict, header: list[str]) -> None:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100,
                          allow_unicode=True)
    atomic_write_text(path, "".join(f"# {line}\n" for line in header) + text)


# -- the plot ---------------------------------------------------------------------------------
def plot(path: Path, board: list[Row], dims: list[space.Dimension], objective: str,
         direction: str, title: str) -> None:
    """Objective by trial (with the best so far), then the objective against each
    hyperparameter: one panel each, at most three to a row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    panels = 1 + len(dims)
    columns = min(3, panels)
    lines = math.ceil(panels / columns)
    figure = Figure(figsize=(5.0 * columns, 3.8 * lines), dpi=100, layout="constrained")
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    scored = sorted((r for r in board if r.objective is not None), key=lambda r: r.number)
    styles = {"complete": {"color": "C0", "marker": "o"},
              "pruned": {"color": "C1", "marker": "v"},
              "running": {"color": "C2", "marker": "s"},
              "interrupted": {"color": "C3", "marker": "x"},
              "failed": {"color": "C3", "marker": "x"}}
    ax = axes[0]
    for status, style in styles.items():
        points = [r for r in scored if r.status == status]
        if points:
            ax.scatter([r.number for r in points], [r.objective for r in points],
                       label=status, s=28, zorder=3, **style)
    complete = [r for r in scored if r.status == "complete"]
    if complete:
        best, xs, ys = None, [], []
        for r in complete:
            if best is None or (r.objective > best if direction == "max" else r.objective < best):
                best = r.objective
            xs.append(r.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="C0", alpha=0.5, label="best so far")
    best_row = next((r for r in board if r.status == "complete"), None)
    if best_row is not None:
        ax.scatter([best_row.number], [best_row.objective], s=160, marker="*", color="gold",
                   edgecolors="black", zorder=4, label=f"best (trial {best_row.number})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} by trial ({direction})")
    ax.grid(alpha=0.3)
    if scored:
        ax.legend(fontsize=8)
    for ax, dim in zip(axes[1:], dims, strict=False):
        points = [r for r in scored if dim.name in r.values]
        if dim.kind in ("choice", "bool"):
            labels = [space.format_value(c) for c in dim.choices()]
            ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
            position = {label: i for i, label in enumerate(labels)}
        else:
            position = None
            if dim.log:  # 1, 2, 5 per decade, plainly written: a search spans few decades
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        for status, style in styles.items():
            chosen = [r for r in points if r.status == status]
            if chosen:
                ax.scatter([_x(r.values[dim.name], position) for r in chosen],
                           [r.objective for r in chosen], s=28, zorder=3, **style)
        if best_row is not None and dim.name in best_row.values:
            ax.scatter([_x(best_row.values[dim.name], position)], [best_row.objective], s=160,
                       marker="*", color="gold", edgecolors="black", zorder=4)
        if dim.kind == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(dim.name)
        ax.set_ylabel(objective)
        ax.set_title(f"{objective} by {dim.name}")
        ax.grid(alpha=0.3)
    for ax in axes[panels:]:
        ax.set_visible(False)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def _x(value: Any, position: dict[str, int] | None) -> float:
    """Where a value goes on its panel's x axis: itself, or a choice's slot."""
    if position is None:
        return float(value)
    return position.get(space.format_value(value), -1)


# -- TensorBoard ------------------------------------------------------------------------------
def write_hparams(folder: Path, board: list[Row], dims: list[space.Dimension],
                  objective: str) -> bool:
    """One HPARAMS session per finished trial under `folder/trial-NNNN`, as the tensorboard
    callback writes a run's; False when tensorboardX is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return False
    from nntrain.train.callbacks import write_hparams_session

    for row in board:
        session = folder / f"trial-{row.number:04d}"
        if row.status not in ("complete", "pruned") or row.objective is None or \
                session.exists():  # a finished trial's session never changes
            continue
        hparams = {d.name: _hparam(row.values[d.name]) for d in dims if d.name in row.values}
        metrics = {f"hparams/{objective}": float(row.objective),
                   "hparams/epochs": float(row.epochs)}
        write_hparams_session(session, hparams, metrics, row.epochs, SummaryWriter)
    return True


def _hparam(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def console_summary(console: Console, board: list[Row], objective: str) -> None:
    counts: dict[str, int] = {}
    for row in board:
        counts[row.status] = counts.get(row.status, 0) + 1
    console.print(", ".join(f"{n} {status}" for status, n in sorted(
        counts.items(), key=lambda kv: _ORDER[kv[0]])), highlight=False)
