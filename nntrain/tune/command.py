"""`nntrain tune CONFIG`: check the search, open (or continue) its study, run trials in this
process and in `--workers - 1` more, then write the leaderboard, best.yaml and the plot.

runs/<name>/            the tune directory
  study.db              the optuna study (SQLite), unless --storage names another database
  trial-NNNN/           one ordinary run directory per trial (`nntrain evaluate` works on it)
  leaderboard.csv  best.yaml  tune.png  tune.json  tensorboard/trial-NNNN/ (HPARAMS)
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from rich.console import Console

from nntrain.config.loader import (
    ConfigError,
    Issue,
    LoadedConfig,
    _where,
    apply_override,
    closest,
    format_path,
    load_config,
    read_yaml,
    validate_config,
)
from nntrain.config.schema import Config
from nntrain.consoles import make_console, shell
from nntrain.errors import UserError
from nntrain.fsutil import DiskFull, atomic_write_json
from nntrain.tune import space

if TYPE_CHECKING:
    from nntrain.build import Setup

TUNE_HINT = "pip install 'nntrain[tune]' (optuna)"


def _rate_path(raw: dict) -> str:
    """Where this config's learning rate is searched: the short form `{adam: {...}}` puts it
    one level down."""
    optimizer = (raw.get("compile") or {}).get("optimizer")
    if isinstance(optimizer, dict) and len(optimizer) == 1 and "type" not in optimizer:
        return f"compile.optimizer.{next(iter(optimizer))}.learning_rate"
    return "compile.optimizer.learning_rate"


def tune(config_path: Path, overrides: list[str], runs_dir: Path, console: Console, *,
         workers: int = 1, storage: str | None = None, quiet: bool = False,
         worker: int = 0) -> int:
    """Run a search; returns the exit code (0, or 130/143 when stopped by a signal)."""
    try:
        import optuna
    except ImportError:
        raise UserError("nntrain tune needs optuna, which is not installed", TUNE_HINT) from None
    from nntrain.interrupts import deferred_interrupts

    try:
        # a signal is noted and acted on between trials (or inside one, by fit): raised at
        # once, it can land in a garbage-collector callback, which swallows it
        with deferred_interrupts() as interrupts:
            if worker:
                _stop_when_orphaned(os.getppid())
            return _tune(config_path, overrides, runs_dir, console, interrupts,
                         workers=workers, storage=storage, quiet=quiet, worker=worker)
    except optuna.exceptions.StorageInternalError as e:
        from nntrain.tune import study as studies

        where = studies.printable(storage) if storage else \
            Path(runs_dir) / load_config(config_path, overrides).config.name
        if _disk_full(e):
            raise DiskFull(f"no space left on the device while writing the study in {where}",
                           "free space on that disk, then run the same command to continue "
                           "the search (finished trials are kept)") from None
        raise UserError(f"the study storage in {where} failed: "
                        f"{studies.printable(storage or '', str(_root(e)))}",
                        "run the same command to continue the search (finished trials are "
                        "kept)") from None


def _stop_when_orphaned(parent: int) -> None:
    """A worker whose command was killed outright stops as at a Ctrl-C (its trial runs again
    when the search continues): in a process group of its own, it is out of reach of a
    signal to the command's group."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _root(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def _disk_full(error: BaseException) -> bool:
    """Whether a storage error comes from a full disk (SQLite says so in words)."""
    found: BaseException | None = error
    while found is not None:
        if isinstance(found, OSError) and found.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(found) or "No space left" in str(found):
            return True
        found = found.__cause__ or found.__context__
    return False


def _tune(config_path: Path, overrides: list[str], runs_dir: Path, console: Console,
          interrupts: Any, *, workers: int, storage: str | None, quiet: bool,
          worker: int) -> int:
    from nntrain.commands import configure_jax
    from nntrain.tune import study as studies
    from nntrain.tune.trials import Search, run_trial

    if workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more")
    loaded = load_config(config_path, overrides)
    search = loaded.config.search
    if search is None:
        raise UserError(f"{config_path} has no search: section, so there is nothing to tune",
                        "add one (README: Hyperparameter search), e.g. search: {parameters: "
                        f"{{{_rate_path(loaded.raw)}: {{type: float, min: 1.0e-4, "
                        "max: 1.0e-2, log: true}}}")
    raw, positions, override_paths, dims = check_search(loaded, overrides)
    # the default point must build (shapes are checked here, before anything is written)
    configure_jax()
    from nntrain.build import prepare

    base = validate_config(space.apply(raw, dims, space.defaults(dims)), loaded.source,
                           positions, override_paths)
    setup = prepare(base)
    objective, direction = resolve_objective(loaded, setup, positions, override_paths)

    studies.check_algorithm(search)
    interrupts.check()  # a signal while JAX was imported and the config checked: nothing made
    name = loaded.config.name
    folder = Path(runs_dir) / name
    seed = search.seed if search.seed is not None else loaded.config.seed
    afresh = (f"delete the study {name} from {studies.printable(storage)} and the folder "
              f"{folder}" if storage
              else f"delete the folder {folder} (its study.db, trials and reports)")
    earlier = sorted(p.name for p in folder.glob("trial-*"))
    orphaned = UserError(f"{folder} holds trials of an earlier search "
                         f"({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}) but "
                         "no study of it", f"to start afresh, {afresh}; or give the config "
                         "another name")
    # a database elsewhere: reached before anything is created here
    opened = studies.open_storage(storage) if storage else None
    if earlier and not storage and not (folder / "study.db").exists():
        raise orphaned  # its study was deleted, not its trials
    folder.mkdir(parents=True, exist_ok=True)
    # two commands started at once on a new study: one creates the database and the study
    # (and queues the defaults' trial once), the other then finds them
    with studies.locked(folder):
        if opened is None:
            opened = studies.open_storage(studies.sqlite_url(folder / "study.db"))
        if earlier and not studies.has_study(opened, name):
            raise orphaned
        try:
            study, created = studies.open_study(opened, name, direction, fingerprint(loaded),
                                                dims, search, seed, worker,
                                                loaded.config.fit.epochs, in_current_form)
        except studies.SearchChanged as e:
            raise UserError(e.message, f"to start this search afresh, {afresh} (or give the "
                            "config another name); to continue the old one, undo the change"
                            ) from None
    limit = studies.trial_limit(search, dims)
    prefix = f"[dim]worker {worker}:[/] " if worker else ""
    if worker == 0:
        done = studies.used(study)
        console.print(
            f"Tuning {name} -> {folder}  ({search.algorithm} search over {len(dims)} "
            f"parameter{'s' if len(dims) != 1 else ''}, {limit} trials"
            + (f" of a {space.grid_size(dims)}-point grid" if search.algorithm == "grid" else "")
            + f", objective {objective} ({direction})"
            + (f", pruner {search.pruner_name()}" if search.pruner_name() != "none" else "")
            + (f", {workers} workers" if workers > 1 else "") + ")",
            soft_wrap=True, highlight=False)
        if not created:
            where = studies.printable(storage) if storage else folder / "study.db"
            console.print(f"Continuing the study in {where}: {done} "
                          f"of {limit} trials done or under way", soft_wrap=True,
                          highlight=False)
    context = Search(loaded.source, raw, positions, override_paths, dims, objective, direction,
                     search.pruner_name() != "none", folder, Path(runs_dir))
    code, start = 0, time.monotonic()
    if worker == 0 and workers > 1:
        # N worker processes, started alike, so that N trials really run at once; this one
        # waits for them and reports
        code = _join(lambda: _spawn(config_path, overrides, runs_dir, storage, workers),
                     console)
    else:
        while search.timeout is None or time.monotonic() - start < search.timeout:
            if interrupts.signum is not None:  # between trials
                code = 128 + interrupts.signum
                break
            trial = studies.next_trial(study, limit, folder)
            if trial is None:
                break
            outcome = run_trial(context, study, trial, console, quiet=quiet or worker > 0,
                                prefix=prefix)
            _say_outcome(console, outcome, objective, study, prefix)
            if outcome.exit_code:
                code = outcome.exit_code
                break
        else:
            console.print(f"{prefix}search.timeout ({search.timeout:g}s) reached: no more "
                          "trials started", highlight=False)
    if worker:
        return code
    trials = _report(console, study, context, loaded, search, name, folder, raw, dims)
    if code:
        again: list[object] = ["nntrain", "tune", config_path]
        for assignment in overrides:
            again += ["--set", assignment]
        if Path(runs_dir) != Path("runs"):
            again += ["--runs-dir", runs_dir]
        if storage:
            again += ["--storage", studies.printable(storage)]
        if workers > 1:
            again += ["--workers", workers]
        console.print(f"[yellow]Stopped.[/] Run the same command to continue the search "
                      f"(interrupted trials run again): {shell(*again)}",
                      soft_wrap=True, highlight=False)
    elif trials["failed"] and not trials["complete"] and not trials["pruned"]:
        console.print("[red]No trial completed[/]: each failed (above, and in the trials' "
                      "run.json); fix the config or the search space", soft_wrap=True,
                      highlight=False)
        return 1  # as a failed fit: scripts must not take this for a finished search
    return code


def check_search(loaded: LoadedConfig, overrides: list[str]) -> tuple[dict, dict, dict, list]:
    """Cross-check a loaded config's search section against the config (paths, `when:`,
    each distribution's corners); raises ConfigError. Returns the config's data as written
    (before `repeat:` expansion, --set applied), its positions and overrides, and the space."""
    raw, positions = read_yaml(loaded.source)
    override_paths = {apply_override(raw, a): a for a in overrides}

    def validate(data: dict) -> list[Issue]:
        try:
            validate_config(data, loaded.source, positions, override_paths)
        except ConfigError as e:
            return e.issues
        return []

    dims, problems = space.check(loaded.config.search, raw, validate)
    search, epochs = loaded.config.search, loaded.config.fit.epochs
    searched_epochs = any(d.path == ("fit", "epochs") for d in dims)
    if search.pruner_name() != "none" and not searched_epochs and \
            search.hyperband.min_epochs >= epochs:
        problems.append((("search", "hyperband", "min_epochs"),
                         f"{search.hyperband.min_epochs} epochs before a trial may be pruned, "
                         f"and fit.epochs is {epochs}: no trial would ever be pruned; give "
                         f"fewer than {epochs}"))
    if problems:
        raise ConfigError([Issue(_where(loaded.source, positions, override_paths,
                                        (*path, "<key>") if len(path) == 3 else path),
                                 format_path(path), message) for path, message in problems])
    return raw, positions, override_paths, dims


def fingerprint(loaded: LoadedConfig) -> str:
    """What makes a search the same search: everything but how long it may run."""
    return _fingerprint_of(loaded.config)


def _fingerprint_of(config: Config) -> str:
    data = config.model_dump(mode="json", exclude_none=True)
    for key in ("max_trials", "timeout"):
        data["search"].pop(key, None)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def in_current_form(saved: str) -> str:
    """A study's saved fingerprint as this version writes it: settings added since then
    appear with their defaults, so they do not count as a change."""
    try:
        return _fingerprint_of(Config.model_validate(yaml.safe_load(saved)))
    except (yaml.YAMLError, ValidationError):
        return saved  # a setting since removed or changed: compared as it was written


def resolve_objective(loaded: LoadedConfig, setup: Setup, positions: dict,
                      overrides: dict) -> tuple[str, str]:
    """The figure trials are ranked by, and whether more is better. Default: the first
    validation accuracy the model logs (a classifier), else val_loss. Direction auto reads
    a renamed metric's kind (a top_k accuracy named `top5` is maximised)."""
    from nntrain.config.callbacks import resolve_mode

    log_names = setup.log_names()
    search = loaded.config.search
    validation = loaded.config.data.validation is not None
    names = [*log_names, *(f"val_{n}" for n in log_names if validation)]
    given = search.objective
    where = ("search", "objective")
    if given is None:
        if not validation:
            raise ConfigError([Issue(_where(loaded.source, positions, overrides, ("search",)),
                                     "search", "trials are compared on validation figures, "
                                     "and the config has no data.validation; add one (e.g. "
                                     "data.validation: {fraction: 0.1}) or name a training "
                                     "figure in search.objective")])
        accuracy = next((n for n in log_names if n.endswith("accuracy")), None)
        return (f"val_{accuracy}", "max") if accuracy else ("val_loss", "min")
    metric, direction = (given, "auto") if isinstance(given, str) else (given.metric,
                                                                        given.direction)
    if metric not in names:
        at = where if isinstance(given, str) else (*where, "metric")
        hint = "" if validation or not metric.startswith("val_") else \
            " (validation figures need data.validation)"
        raise ConfigError([Issue(_where(loaded.source, positions, overrides, at),
                                 format_path(at), f"the epoch logs have no '{metric}'{hint}; "
                                 f"they hold {', '.join(names)}", closest(metric, names))])
    kind = setup.renamed_metrics().get(metric.removeprefix("val_"))
    return metric, resolve_mode(kind or metric, direction)


def _spawn(config_path: Path, overrides: list[str], runs_dir: Path, storage: str | None,
           workers: int) -> list[subprocess.Popen]:
    """Workers 1..N: the same command in other processes, sharing the study."""
    command = [sys.executable, "-m", "nntrain", "tune", str(config_path),
               "--runs-dir", str(runs_dir)]
    for assignment in overrides:
        command += ["--set", assignment]
    if storage:
        command += ["--storage", storage]
    # each in a process group of its own: a Ctrl-C at the terminal reaches this process
    # alone, which tells the workers once (two signals each would read as two Ctrl-Cs)
    group = {"process_group": 0} if os.name == "posix" else {}
    return [subprocess.Popen([*command, "--worker-index", str(i)], **group)
            for i in range(1, workers + 1)]


def _join(spawn: Callable[[], list[subprocess.Popen]], console: Console) -> int:
    """Start the workers and wait for them. The first Ctrl-C, SIGTERM or SIGHUP (the
    terminal closed) is passed on as SIGTERM, which a worker treats as a first Ctrl-C: its
    trial stops after the current steps and runs again later; a second is passed on as
    SIGINT, which stops them at once. A signal while they start is passed on once they
    have."""
    stopped = 0
    children: list[subprocess.Popen] = []

    def tell(stop: int) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(stop)

    def forward(signum, frame):
        nonlocal stopped
        again = bool(stopped)
        stopped = stopped or 128 + signum
        if not again:
            console.print(f"[yellow]{signal.Signals(signum).name}: each worker stops its trial "
                          "after the current steps (Ctrl-C again to stop at once)[/]",
                          soft_wrap=True)
        tell(signal.SIGINT if again else signal.SIGTERM)

    handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if os.name == "posix" else [])
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        children.extend(spawn())
        if stopped:
            tell(signal.SIGTERM)
        codes = [child.wait() for child in children]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for child, returned in zip(children, codes, strict=True):
        if returned not in (0, 130, 143):
            console.print(f"[red]worker process {child.pid} exited with code {returned}[/]",
                          highlight=False)
    return stopped or next((c for c in codes if c in (130, 143)), 0)


def _say_outcome(console: Console, outcome: Any, objective: str, study: Any,
                 prefix: str) -> None:
    n = outcome.number
    if outcome.state == "complete":
        best = ""
        try:
            if study.best_trial.number == n:
                best = "  [green]best so far[/]"
        except ValueError:
            pass
        console.print(f"{prefix}Trial {n}: {objective} {outcome.value:.4f} after "
                      f"{outcome.epochs} epoch{'s' if outcome.epochs != 1 else ''}{best}",
                      highlight=False)
    elif outcome.state == "pruned":
        best = "" if outcome.value is None else f" (best {objective} {outcome.value:.4f})"
        console.print(f"{prefix}Trial {n}: [yellow]pruned after epoch {outcome.epochs}[/]"
                      f"{best}", highlight=False)
    elif outcome.state == "interrupted":
        console.print(f"{prefix}Trial {n}: [yellow]interrupted[/]; it runs again from the "
                      "start when the search continues", soft_wrap=True, highlight=False)
    else:
        console.print(f"{prefix}Trial {n}: [red]failed[/]: {outcome.message}", soft_wrap=True,
                      highlight=False)


def _report(console: Console, study: Any, context: Any, loaded: LoadedConfig, search: Any,
            name: str, folder: Path, raw: dict, dims: list[space.Dimension]) -> dict[str, int]:
    """Write and print the leaderboard and best.yaml; returns the trials' count by state."""
    from nntrain.tune import report

    objective, direction = context.objective, context.direction
    board = report.rows(study.get_trials(deepcopy=False), dims, direction)
    report.write_csv(folder / "leaderboard.csv", board, dims, objective)
    title = f"{name}: {search.algorithm} search, {objective} ({direction})"
    written = ["leaderboard.csv"]
    if any(r.objective is not None for r in board):
        report.plot(folder / "tune.png", board, dims, objective, direction, title)
        written.append("tune.png")
    if report.write_hparams(folder / "tensorboard", board, dims, objective):
        written.append("tensorboard/")
    best = next((r for r in board if r.status == "complete"), None)
    summary: dict[str, Any] = {
        "name": name, "config_source": str(loaded.source), "algorithm": search.algorithm,
        "objective": objective, "direction": direction, "max_trials": search.max_trials,
        "trials": {s: sum(1 for r in board if r.status == s) for s in
                   ("complete", "pruned", "running", "interrupted", "failed")},
        "epochs_trained": sum(r.epochs for r in board),
        "best": None if best is None else {"trial": best.number, "value": best.objective,
                                           "values": best.values, "run": best.run},
    }
    if best is not None:
        data = report.best_config(raw, dims, best.values, loaded.source.resolve().parent,
                                  folder)
        report.write_best(folder / "best.yaml", data, [
            f"The best trial of the search in {folder}: trial {best.number}, {objective} "
            f"{best.objective:.4f}",
            "  ".join(f"{k}={space.format_value(v)}" for k, v in best.values.items()),
            f"Train it: {shell('nntrain', 'fit', folder / 'best.yaml')}"])
        written.insert(1, "best.yaml")
    atomic_write_json(folder / "tune.json", summary)
    # a file or pipe gets the whole table, not one squeezed into 80 columns
    wide = console if console.is_terminal else make_console(file=console.file, width=250,
                                                        highlight=False)
    wide.print(report.table(board, dims, objective, title))
    if len(board) > report.SHOWN_ROWS:
        console.print(f"({len(board) - report.SHOWN_ROWS} more in leaderboard.csv)")
    report.console_summary(console, board, objective)
    console.print(f"{summary['epochs_trained']} epochs trained in all (at most "
                  f"{len(board) * loaded.config.fit.epochs} for "
                  f"{'this trial' if len(board) == 1 else f'these {len(board)} trials'})",
                  highlight=False)
    if best is not None:
        console.print(f"[bold]best: trial {best.number}[/], {objective} {best.objective:.4f}  "
                      + "  ".join(f"{k}={space.format_value(v)}" for k, v in
                                  best.values.items()), soft_wrap=True, highlight=False)
    console.print(f"wrote {', '.join(written)} in {folder}", soft_wrap=True, highlight=False)
    if best is not None:
        console.print(f"train the best config: {shell('nntrain', 'fit', folder / 'best.yaml')}",
                      soft_wrap=True, highlight=False)
    return summary["trials"]
