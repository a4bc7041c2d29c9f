"""`nntrain runs`, `runs compare`, `runs show`, `plot` and `schema`: reading run directories
back. Nothing here imports JAX, and a damaged file is reported, never a crash."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nntrain.consoles import make_console, shell
from nntrain.errors import UserError
from nntrain.progress import MISSING, fmt_number
from nntrain.runs import RUN_FILE, Run, parse_time, resolve_run, runs_newest_first

FINISHED = ("completed", "stopped", "failed")
STATUS_STYLE = {"completed": "green", "stopped": "yellow", "failed": "red", "running": "cyan",
                "running?": "magenta", "killed": "red", "damaged": "bold red",
                "unknown": "dim"}
# A live `fit` rewrites run.json after every epoch. Silence for longer than this (or three
# of the run's longest epochs) means its process is probably gone: run.json has no pid.
QUIET_SECONDS = 600.0


def _for_tables(console: Console) -> Console:
    """On a terminal, tables fit its width; into a pipe or a file, rows stay whole (one line
    per run, for grep), as `ls -l` or `docker ps` do."""
    if console.is_terminal:
        return console
    return make_console(file=_TrimmedLines(console.file), width=max(console.width, 250),
                   highlight=False, no_color=True)


class _TrimmedLines:
    """A text file that drops the spaces a table pads its lines with to its full width."""

    def __init__(self, file: Any) -> None:
        self.file, self.pending = file, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.file.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.file.write(self.pending)
            self.pending = ""
        self.file.flush()


def _add_row(table: Table, *cells: Any) -> None:
    """Cells are plain text: a `[` in a config value or a folder name is not markup."""
    table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in cells))


# -- one run, read leniently ---------------------------------------------------------------
@dataclass
class RunView:
    run: Run
    info: dict[str, Any] | None  # None: run.json is damaged
    metrics: dict[str, Any] | None  # None: metrics.json is damaged
    config: dict[str, Any] | None  # None: config.yaml is damaged
    status: str = "unknown"
    problems: list[str] = field(default_factory=list)
    silent_for: float | None = None  # seconds since a `running` run last wrote anything

    @property
    def start(self) -> datetime | None:
        return parse_time((self.info or {}).get("start"))

    @property
    def end(self) -> datetime | None:
        return parse_time((self.info or {}).get("end"))

    @property
    def epochs_done(self) -> int | None:
        for source in (self.info or {}, self.metrics or {}):
            value = source.get("epochs_completed")
            if isinstance(value, int):
                return value
        return None

    @property
    def epochs_planned(self) -> int | None:
        value = ((self.config or {}).get("fit") or {}).get("epochs")
        return value if isinstance(value, int) else None

    def duration(self, ended: bool = False) -> float | None:
        """Seconds the run has spent in `fit`, over all its sessions: a resumed run's time
        between the sessions does not count. `ended`: no process trains it now (its last
        write ended a session that recorded no end, as after kill -9)."""
        info = self.info or {}
        start = parse_time(info.get("session_start")) or self.start
        if start is None:
            return None
        before = info.get("seconds_before")
        before = before if isinstance(before, int | float) else 0.0
        if self.end is not None:
            return before + max(0.0, (self.end - start).total_seconds())
        if self.status == "running" and not ended:
            return before + max(0.0, time.time() - start.timestamp())
        last = self.run.last_write()
        return None if last is None else before + max(0.0, last - start.timestamp())


def view_run(run: Run, now: float | None = None) -> RunView:
    info = run.try_read_json(RUN_FILE)
    view = RunView(run, info, run.try_read_json("metrics.json"), run.try_read_config())
    for name, value in (("run.json", info), ("metrics.json", view.metrics),
                        ("config.yaml", view.config)):
        if value is None:
            view.problems.append(f"{name} is damaged")
    if info and not run.config_path.exists():  # written before run.json: removed since
        view.config = None
        view.problems.append("config.yaml is missing")
    if info and info.get("epochs_completed") and not (run.path / "history.csv").exists():
        view.problems.append("history.csv is missing, though epochs were finished")
    if info is None:
        view.status = "damaged"
        return view
    status = info.get("status")
    if status in FINISHED:
        view.status = status
    elif status == "running":
        view.status = "killed" if trainer_gone(info) else "running"
        last = run.last_write()
        if last is not None and view.status == "running":  # alive, or on another host:
            view.silent_for = max(0.0, (now or time.time()) - last)  # but writing?
            if view.silent_for > _patience(run):
                view.status = "running?"
    return view


def trainer_gone(info: dict[str, Any]) -> bool | None:
    """Whether the process run.json says trains the run has ended: True or False when it
    ran on this machine, None when that cannot be told here (another host, a run written
    before runs recorded their process)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, another user's
        return False
    return False


def _patience(run: Run) -> float:
    try:
        seconds = [row.get("seconds", 0.0) for row in run.history()]
    except UserError:
        seconds = []
    longest = max((s for s in seconds if math.isfinite(s)), default=0.0)
    return max(QUIET_SECONDS, 3 * longest)


def status_text(view: RunView, reason: bool = True) -> Text:
    """The status, and for a stopped run why: `stopped (early)`, `stopped (interrupted)`."""
    label = view.status
    why = (view.info or {}).get("stop_reason")
    if view.status == "stopped" and isinstance(why, str) and reason:
        label += f" ({_in_brief(why)})"
    return Text(label, style=STATUS_STYLE.get(view.status, ""))


def _in_brief(reason: str) -> str:
    """A stop reason in a word or two for a table (`runs show` has it whole)."""
    for start, brief in (("early stopping", "early"), ("pruned", "pruned"),
                         ("interrupted", "interrupted"), ("a callback", "by a callback")):
        if reason.startswith(start):
            return brief
    return reason if len(reason) <= 20 else reason[:19] + "…"


# -- formatting ------------------------------------------------------------------------------
def fmt_time(value: datetime | None, seconds: bool = False) -> str:
    if value is None:
        return MISSING
    return value.strftime("%Y-%m-%d %H:%M:%S%z" if seconds else "%Y-%m-%d %H:%M")


def _continue_note(views: list[RunView]) -> str:
    trials = sum(1 for v in views if v.run.is_trial)
    runs = "`nntrain fit --resume RUN` continues a run from its last finished epoch"
    search = "the search's `nntrain tune` command trains a trial anew"
    return search if trials == len(views) else f"{runs}; {search}" if trials else runs


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_figures(figures: Any, skip: tuple[str, ...] = ()) -> str:
    if not isinstance(figures, dict) or not figures:
        return MISSING
    return "  ".join(f"{k} {fmt_number(v)}" for k, v in figures.items() if k not in skip)


def fmt_best(view: RunView, with_monitor: bool = True) -> str:
    metrics = view.metrics
    if metrics is None:
        return "damaged"
    if metrics.get("best_value") is None:
        return MISSING
    text = fmt_number(metrics["best_value"])
    if with_monitor:
        text = f"{metrics.get('monitor', '?')} {text}"
    return text + (f" ({metrics['best_epoch']})" if metrics.get("best_epoch") else "")


def _has_best(view: RunView) -> bool:
    return (view.metrics or {}).get("best_value") is not None


def _shared(values: set) -> Any:
    """The one value all have, or None."""
    return next(iter(values)) if len(values) == 1 else None


MAX_TEST_COLUMNS = 3


def _test_names(views: list[RunView]) -> list[str]:
    """The test figures to give a column each: those of every run that has any, when they
    are the same few; else [] (one column of named figures)."""
    present = [list(map(str, figures)) for v in views
               if isinstance(figures := (v.metrics or {}).get("test"), dict) and figures]
    names = _shared({frozenset(names) for names in present})
    # in the first run's order (loss first, as fit writes them)
    return present[0] if names and len(names) <= MAX_TEST_COLUMNS else []


def fmt_epochs(view: RunView) -> str:
    done, planned = view.epochs_done, view.epochs_planned
    if done is None:
        return MISSING if planned is None else f"0/{planned}"
    return f"{done}/{planned}" if planned else str(done)


# -- nntrain runs ----------------------------------------------------------------------------
def list_runs(runs_dir: Path, pattern: str | None, console: Console) -> None:
    console = _for_tables(console)
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--runs-dir {runs_dir} is a file, not a folder of runs",
                        "give the folder runs are kept in (runs/ by default)")
    runs = runs_newest_first(runs_dir)
    if not runs:
        where = "does not exist" if not runs_dir.exists() else "holds no runs"
        console.print(f"{escape(str(runs_dir))} {where} yet: train a model with "
                      "`nntrain fit CONFIG`.", soft_wrap=True)
        return
    chosen = runs_newest_first(runs_dir, pattern) if pattern else runs
    if not chosen:
        names = sorted({r.name for r in runs})
        console.print(f"no runs named {escape(pattern or '')!r} under {escape(str(runs_dir))}; "
                      f"names there: {escape(', '.join(names))}", soft_wrap=True)
        return
    now = time.time()
    views = [view_run(run, now) for run in chosen]
    narrow = console.width < 140  # then the run column's timestamp stands for the start
    table = Table(title=Text(f"runs under {runs_dir}" + (f" named {pattern}" if pattern else ""),
                             style="bold"),
                  title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("run", no_wrap=True)
    if not narrow:
        table.add_column("start", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("epochs", justify="right", no_wrap=True)
    # runs of one config share a monitor and test figures: a column each, a number a cell,
    # the name in the header (on two lines where the terminal is narrow)
    monitor = _shared({m for v in views if _has_best(v)
                       and isinstance(m := (v.metrics or {}).get("monitor"), str)})
    tests = _test_names(views)
    gap = "\n" if narrow else " "
    table.add_column(Text(f"best{gap}{monitor}" + ("" if narrow else " (epoch)")) if monitor
                     else "best (epoch)",
                     min_width=None if monitor else 10, no_wrap=monitor is not None)
    for name in tests or ["test"]:
        table.add_column(Text(f"test{gap}{name}") if tests else name,
                         min_width=None if tests else 12, justify="right" if tests else "left",
                         no_wrap=bool(tests))
    table.add_column("time", justify="right", no_wrap=True)
    for view in views:
        figures = (view.metrics or {}).get("test")
        test = [fmt_number(figures.get(name)) if isinstance(figures, dict) else MISSING
                for name in tests] if tests else [fmt_figures(figures)]
        cells = [view.run.label, fmt_time(view.start), status_text(view, reason=not narrow),
                 fmt_epochs(view), fmt_best(view, with_monitor=monitor is None), *test,
                 fmt_duration(view.duration())]
        if narrow:
            del cells[1]
        _add_row(table, *cells)
    console.print(table)
    notes = []
    doubtful = [v for v in views if v.status == "running?"]
    if doubtful:
        notes.append(f"running?: run.json says running, but {len(doubtful)} "
                     f"run{'s' if len(doubtful) > 1 else ''} wrote nothing for "
                     f"{fmt_duration(min(v.silent_for or 0 for v in doubtful))} or more: the "
                     f"process may be gone; {_continue_note(doubtful)}")
    killed = [v for v in views if v.status == "killed"]
    if killed:
        them = "them" if len(killed) > 1 else "it"
        notes.append(f"killed: run.json says running, but no process trains {them} (kill -9, "
                     f"a crash, power loss); {_continue_note(killed)}")
    damaged = [v for v in views if v.problems]
    for view in damaged:
        notes.append(f"{view.run.label}: {', '.join(view.problems)}")
    for note in notes:
        console.print(Text(note, style="dim"), soft_wrap=True)
    count = f"{len(views)} run{'s' if len(views) != 1 else ''}"
    console.print(Text(f"{count}; a run column value is a RUN for `nntrain runs show`, "
                       "`runs compare`, `plot`, `evaluate`, `predict`"
                       + ("" if runs_dir == Path("runs") else " (with the same --runs-dir)"),
                       style="dim"), soft_wrap=True)


# -- nntrain runs compare --------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config data as dotted keys, lists by index (`model.layers.1.dense.units`, the
    keys `--set` takes). A list of plain values stays one value (`model.input`)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix: value} if prefix else {}


def fmt_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _labels(a: Run, b: Run) -> tuple[str, str]:
    if a.label == b.label:
        return f"{a.label} (A)", f"{b.label} (B)"
    return a.label, b.label


def compare_runs(spec_a: str, spec_b: str, runs_dir: Path, console: Console) -> None:
    console = _for_tables(console)
    a, b = resolve_run(spec_a, runs_dir), resolve_run(spec_b, runs_dir)
    va, vb = view_run(a), view_run(b)
    label_a, label_b = _labels(a, b)
    console.print(Text.assemble(("A ", "bold"), f"{a.path}  ", status_text(va)), soft_wrap=True)
    console.print(Text.assemble(("B ", "bold"), f"{b.path}  ", status_text(vb)), soft_wrap=True)
    for view in (va, vb):
        for problem in view.problems:
            console.print(Text(f"{view.run.label}: {problem}", style="red"), soft_wrap=True)

    # the configs, key by key
    if va.config is None or vb.config is None:
        console.print("config: cannot compare, a config.yaml is damaged or missing")
    else:
        flat_a, flat_b = flatten(va.config), flatten(vb.config)
        keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
        differing = [k for k in keys if flat_a.get(k, MISSING) != flat_b.get(k, MISSING)
                     or (k in flat_a) != (k in flat_b)]
        if not differing:
            console.print("config: identical" + (
                "" if va.config else " (neither run has a config.yaml)"))
        else:
            table = Table(title=f"config: {len(differing)} of {len(keys)} values differ",
                          title_justify="left", title_style="bold")
            table.add_column("key", overflow="fold")
            table.add_column(Text(label_a), overflow="fold")
            table.add_column(Text(label_b), overflow="fold")
            for key in differing:
                _add_row(table, key, fmt_value(flat_a[key]) if key in flat_a else MISSING,
                         fmt_value(flat_b[key]) if key in flat_b else MISSING)
            console.print(table)

    # the figures
    table = Table(title="figures", title_justify="left", title_style="bold")
    table.add_column("figure")
    table.add_column(Text(label_a), justify="right")
    table.add_column(Text(label_b), justify="right")
    table.add_column("B - A", justify="right")
    for name, value_a, value_b in _figure_rows(va, vb):
        delta = ""
        if _is_number(value_a) and _is_number(value_b):
            delta = ("+" if value_b > value_a else "") + fmt_number(value_b - value_a)
        _add_row(table, name, _cell(value_a), _cell(value_b), delta)
    console.print(table)
    note = _data_note((va.info or {}).get("data"), (vb.info or {}).get("data"))
    if note:
        console.print(Text(note), soft_wrap=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any) -> str | Text:
    if isinstance(value, Text):
        return value
    return fmt_number(value) if not isinstance(value, str) else value


def _figure_rows(va: RunView, vb: RunView):
    ma, mb = va.metrics or {}, vb.metrics or {}
    yield "status", status_text(va), status_text(vb)
    yield "epochs", fmt_epochs(va), fmt_epochs(vb)
    if ma.get("monitor") == mb.get("monitor"):
        yield f"best {ma.get('monitor') or ''}".strip(), ma.get("best_value"), mb.get("best_value")
    else:
        yield "best", fmt_best(va), fmt_best(vb)
    yield "best epoch", ma.get("best_epoch"), mb.get("best_epoch")
    for section, title in (("last", "last epoch"), ("test", "test")):
        fa, fb = ma.get(section) or {}, mb.get(section) or {}
        if not isinstance(fa, dict) or not isinstance(fb, dict):
            continue
        for key in list(fa) + [k for k in fb if k not in fa]:
            if key != "seconds":
                yield f"{title} {key}", fa.get(key), fb.get(key)
    yield "time", fmt_duration(va.duration()), fmt_duration(vb.duration())


def _data_note(data_a: Any, data_b: Any) -> str | None:
    if not isinstance(data_a, dict) or not isinstance(data_b, dict):
        return None
    differ = []
    for split in list(data_a) + [s for s in data_b if s not in data_a]:
        a, b = data_a.get(split) or {}, data_b.get(split) or {}
        if a.get("sha256") != b.get("sha256"):
            differ.append(f"{split} ({a.get('examples', 0):,} vs {b.get('examples', 0):,} "
                          "examples)" if a.get("examples") != b.get("examples") else split)
    if not differ:
        return "data: the same examples (SHA-256 of every split)"
    return "data differs: " + ", ".join(differ)


# -- nntrain runs show -----------------------------------------------------------------------
def show_run(spec: str, runs_dir: Path, console: Console) -> None:
    console = _for_tables(console)
    run = resolve_run(spec, runs_dir)
    view = view_run(run)
    info = view.info or {}
    console.print(Text.assemble((run.label, "bold"), "  ", status_text(view)), soft_wrap=True)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    _add_row(table, "folder", str(run.path))
    for problem in view.problems:
        _add_row(table, "damaged", Text(problem, style="red"))
    again = "run the search's `nntrain tune` command again, which trains it anew" \
        if run.is_trial else f"continue with {shell('nntrain', 'fit', '--resume', run.path)}"
    if view.status == "running?":
        _add_row(table, "note", f"run.json says running, but nothing was written for "
                 f"{fmt_duration(view.silent_for)}: the process may be gone; {again}")
    if view.status == "killed":
        _add_row(table, "note", "run.json says running, but no process trains it (kill -9, "
                 f"a crash, power loss); {again}")
    if info.get("stop_reason"):
        _add_row(table, "stop reason", str(info["stop_reason"]))
    _add_row(table, "start", fmt_time(view.start, seconds=True))
    _add_row(table, "end", fmt_time(view.end, seconds=True))
    _add_row(table, "time", fmt_duration(view.duration()))
    _add_row(table, "epochs", fmt_epochs(view))
    if isinstance(info.get("command"), list):
        _add_row(table, "command", " ".join(map(str, info["command"])))
    if info.get("resumed"):
        _add_row(table, "resumed", "yes")
    for key in ("seed", "config_source", "git_commit"):
        if info.get(key) is not None:
            _add_row(table, key.replace("_", " "), str(info[key]))
    data = info.get("data")
    if isinstance(data, dict):
        _add_row(table, "data", "  ".join(
            f"{split} {part.get('examples', 0):,}" for split, part in data.items()
            if isinstance(part, dict)))
    if isinstance(info.get("versions"), dict):
        _add_row(table, "versions", "  ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if isinstance(info.get("devices"), list):
        _add_row(table, "devices", ", ".join(map(str, info["devices"])))
    console.print(table)

    console.print(Text("\nfigures", style="bold"))
    figures = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    figures.add_column(style="bold", no_wrap=True)
    figures.add_column(overflow="fold")
    metrics = view.metrics or {}
    _add_row(figures, "best", fmt_best(view))
    try:
        history = run.history()
    except UserError as e:
        history = []
        _add_row(figures, "history", Text(e.message, style="red"))
    if history:
        last = history[-1]
        _add_row(figures, f"last epoch ({last.get('epoch', '?')})",
                 fmt_figures(last, skip=("epoch", "seconds")))
    if metrics.get("test"):
        which = metrics.get("test_checkpoint")
        _add_row(figures, f"test ({which} weights)" if which else "test",
                 fmt_figures(metrics["test"]))
    for record in metrics.get("evaluations") or []:
        if isinstance(record, dict):
            # the epoch says which weights: a resumed run's best may have moved on since
            epoch = f", epoch {record['epoch']}" if isinstance(record.get("epoch"), int) else ""
            _add_row(
                figures,
                f"evaluate {record.get('split', '?')} ({record.get('checkpoint', '?')}{epoch})",
                fmt_figures(record, skip=("time", "split", "checkpoint", "epoch", "examples"))
                + f"  [{record.get('time', '')}]")
    console.print(figures)

    summary = run.path / "summary.txt"
    if summary.exists():
        console.print(Text("\nmodel (summary.txt)", style="bold"))
        console.print(Text(_read_text(summary)), soft_wrap=True)
    if run.config_path.exists():
        console.print(Text("\nconfig (config.yaml)", style="bold"))
        console.print(Text(_read_text(run.config_path).rstrip()), soft_wrap=True)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"(cannot read: {e})"


# -- nntrain plot ----------------------------------------------------------------------------
def plot(specs: list[str], runs_dir: Path, console: Console, output: Path,
         metrics: list[str] | None) -> None:
    from nntrain.plotting import NOT_PLOTTED, figure_names, plot_runs

    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--output {output}: unknown image format '{output.suffix}'",
                        "give a .png (or .svg, .pdf) file name")
    runs: list[Run] = []
    for spec in specs:
        run = resolve_run(spec, runs_dir)
        if run.path.resolve() not in [r.path.resolve() for r in runs]:
            runs.append(run)
    _check_plot_output(output, runs, metrics)
    curves = []
    for run in runs:
        history = run.history()
        if not history and (view_run(run).epochs_done or 0) > 0:
            there = (run.path / "history.csv").exists()
            what, how = ("holds no epochs", "cut short or emptied") if there else \
                ("is missing", "removed")
            raise UserError(f"{run.path / 'history.csv'} {what}, though the run finished some",
                            f"the file was {how}: restore it from a copy of the run")
        if not history:
            status = view_run(run).status
            raise UserError(f"{run.path} has no history.csv: it has not finished an epoch",
                            f"it {status} before its first epoch ended: there is nothing to "
                            "plot" if status in ("failed", "stopped", "killed")
                            else "plot it after its first epoch")
        curves.append((run.label, history))
    available: list[str] = []
    for _label, history in curves:
        available += [n for n in figure_names(history) if n not in available]
    columns = {key for _label, history in curves for row in history for key in row}
    if metrics:
        names = []
        for metric in metrics:
            if metric.startswith("val_") and metric[4:] in columns and metric not in columns:
                raise UserError(f"--metric {metric}: the runs have no validation figures",
                                f"give --metric {metric[4:]} for the training curve, or plot "
                                "runs that validate (data.validation)")
            name = metric[4:] if metric.startswith("val_") and metric[4:] in columns else metric
            if name not in columns:  # another of the metric's names: rmse, mae, acc
                from nntrain.config.compile import METRICS

                kind = METRICS.canonical(METRICS.spelled(name.removeprefix("val_")))
                names_of_kind = [kind, *(a for a, k in METRICS.aliases.items() if k == kind)]
                name = next((n for n in names_of_kind if n in columns), name)
            if name not in columns or name == "epoch":
                extra = [n for n in NOT_PLOTTED if n in columns and n != "epoch"]
                raise UserError(f"--metric {metric}: no such figure in the runs' history",
                                f"figures: {', '.join(available + extra)}")
            if name not in names:
                names.append(name)
    else:
        names = available
    # a run without any of the figures asked for is no line on the plot, nor in its legend
    has = [any(n in row or f"val_{n}" in row for row in history for n in names)
           for _label, history in curves]
    left_out = [label for (label, _h), kept in zip(curves, has, strict=True) if not kept]
    curves = [curve for curve, kept in zip(curves, has, strict=True) if kept]
    if output.parent != Path("."):
        output.parent.mkdir(parents=True, exist_ok=True)
    width, height = plot_runs(curves, output, names)
    console.print(f"wrote {output} ({width}x{height}): {', '.join(names)} for "
                  f"{len(curves)} run{'s' if len(curves) != 1 else ''}: "
                  f"{', '.join(label for label, _h in curves)}", soft_wrap=True,
                  highlight=False, markup=False)
    if left_out:
        console.print(f"left out (without {', '.join(names)}): {', '.join(left_out)}",
                      soft_wrap=True, highlight=False, markup=False)


# -- nntrain schema --------------------------------------------------------------------------
def _check_plot_output(output: Path, runs: list[Run], metrics: list[str] | None) -> None:
    """A plot never overwrites a run's records: inside a run directory it may only redraw
    that run's own history.png (as training draws it: that run alone, every figure)."""
    target = output.resolve()
    for folder in (f for f in target.parents if (f / "run.json").is_file()):
        redraw = target == folder / "history.png" and not metrics and \
            [r.path.resolve() for r in runs] == [folder]
        if not redraw:
            raise UserError(f"--output {output} is inside the run directory {folder}, where "
                            "the run keeps its own records",
                            "write the plot outside run directories (or redraw a run's own "
                            "history.png: nntrain plot RUN -o RUN/history.png)")


def schema(output: Path | None, console: Console) -> None:
    from nntrain.fsutil import atomic_write_text
    from nntrain.schema_export import config_json_schema

    text = json.dumps(config_json_schema(), indent=2) + "\n"
    if output is None:
        print(text, end="")
        return
    if output.parent != Path("."):
        output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    console.print(f"wrote the config's JSON Schema to {output}; in a config, the line\n"
                  f"  # yaml-language-server: $schema={output}\n"
                  "gives YAML editors completion and checks (a path relative to the config)",
                  soft_wrap=True, highlight=False, markup=False)
