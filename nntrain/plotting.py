"""Learning curves as PNG files (matplotlib's Agg canvas, imported only when drawing).

`plot_history` draws one run (its `history.png`); `plot_runs` overlays several runs for
`nntrain plot`. Both draw one panel per figure (loss, then each metric), at most three panels
to a row, with epochs on the x axis.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nntrain.fsutil import atomic_write_bytes

NOT_PLOTTED = ("epoch", "seconds", "learning_rate")
PANEL_WIDTH, PANEL_HEIGHT, MAX_COLUMNS, DPI = 5.0, 3.6, 3, 100
TRAIN_STYLE = {"linestyle": "-", "marker": "o", "markersize": 3}
VALIDATION_STYLE = {"linestyle": "--", "marker": "s", "markersize": 3}


def figure_names(history: Sequence[dict[str, float]]) -> list[str]:
    """The figures a history holds, training names only (`val_x` is drawn with `x`)."""
    names: list[str] = []
    for row in history:
        for key in row:
            if key not in NOT_PLOTTED and not key.startswith("val_") and key not in names:
                names.append(key)
    return names


def _varies(history: Sequence[dict[str, float]], key: str) -> bool:
    values = {row.get(key) for row in history if row.get(key) is not None}
    return len(values) > 1


def _grid(count: int) -> tuple[int, int]:
    columns = min(count, MAX_COLUMNS)
    return math.ceil(count / columns), columns


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

    return Figure(figsize=(width, height), dpi=DPI)


def _epoch_axis(ax, epochs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):  # one epoch: keep the point off the frame
        ax.set_xlim(min(epochs) - 1, max(epochs) + 1)
    ax.grid(True, alpha=0.3)


def _series(history: Sequence[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    rows = [row for row in history if key in row]
    return [row["epoch"] for row in rows], [row[key] for row in rows]


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())


def plot_history(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """One panel per figure (loss, each metric): training and validation by epoch, and the
    learning rate when it changed during training."""
    if not history:
        return
    names = figure_names(history)
    if "learning_rate" in history[0] and _varies(history, "learning_rate"):
        names.append("learning_rate")
    rows, columns = _grid(len(names))
    fig = _new_figure(PANEL_WIDTH * columns, PANEL_HEIGHT * rows + (0.4 if title else 0.0))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        epochs, values = _series(history, name)
        ax.plot(epochs, values, color="C0", label="train", **TRAIN_STYLE)
        if f"val_{name}" in history[0]:
            ax.plot(*_series(history, f"val_{name}"), color="C1", label="validation",
                    **VALIDATION_STYLE)
        if name == "learning_rate":
            ax.set_yscale("log")
        else:
            ax.legend()  # the panel's title names the figure: the legend says which split
        _epoch_axis(ax, epochs)
        ax.set_ylabel(name)
        ax.set_title(name)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _colours(count: int) -> list[Any]:
    """A colour of its own for each run: matplotlib's 10, then tab20's 20, then as many
    spread over a continuous colour map."""
    import matplotlib

    if count <= 10:
        return [f"C{i}" for i in range(count)]
    if count <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:count])
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / (count - 1)) for i in range(count)]


def plot_runs(runs: Sequence[tuple[str, Sequence[dict[str, float]]]], path: Path,
              names: Sequence[str]) -> tuple[int, int]:
    """Overlay several runs' learning curves: one panel per figure in `names`, one colour per
    run, training solid and validation dashed, one legend naming the runs. Returns the
    image's size in pixels."""
    from matplotlib.lines import Line2D

    rows, columns = _grid(len(names))
    width = max(PANEL_WIDTH * columns, 7.0)
    legend_columns = max(1, min(len(runs), int(width // 2.8)))
    legend_rows = math.ceil(len(runs) / legend_columns) + 1  # + the train/validation key
    legend_height = 0.25 * legend_rows + 0.25
    height = PANEL_HEIGHT * rows + legend_height
    fig = _new_figure(width, height)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    any_validation = False
    colours = _colours(len(runs))
    for ax, name in zip(axes, names, strict=False):
        all_epochs: list[int] = []
        for colour, (_label, history) in zip(colours, runs, strict=True):
            epochs, values = _series(history, name)
            all_epochs += epochs
            if values:
                ax.plot(epochs, values, color=colour, **TRAIN_STYLE)
            epochs, values = _series(history, f"val_{name}")
            if values:
                any_validation = True
                ax.plot(epochs, values, color=colour, **VALIDATION_STYLE)
        if name == "learning_rate":
            ax.set_yscale("log")
        _epoch_axis(ax, all_epochs)
        ax.set_ylabel(name)
        ax.set_title(name)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colour, linewidth=2.5, label=label)
               for colour, (label, _history) in zip(colours, runs, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncols=legend_columns, frameon=False,
               bbox_to_anchor=(0.5, 0.25 / height))
    style = [Line2D([], [], color="0.3", label="train", **TRAIN_STYLE)]
    if any_validation:
        style.append(Line2D([], [], color="0.3", label="validation", **VALIDATION_STYLE))
    fig.legend(handles=style, loc="lower center", ncols=2, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    _save(fig, path)
    return round(width * DPI), round(height * DPI)
