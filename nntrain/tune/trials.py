"""One trial: the sampled values written into the config, trained by `nntrain fit`'s own code
into an ordinary run directory, the objective reported to optuna after every epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from nntrain.config.loader import ConfigError, validate_config
from nntrain.errors import DataError, DataModelMismatch, TrainingFailed, UserError
from nntrain.train.callbacks import Callback
from nntrain.tune import space
from nntrain.tune import study as studies


@dataclass
class Search:
    """Everything a worker needs to run trials of one search."""

    source: Path  # the config file
    raw: dict  # its data with --set applied, `repeat:` not yet expanded
    positions: dict
    overrides: dict
    dims: list[space.Dimension]
    objective: str
    direction: str  # max | min
    prune: bool
    folder: Path  # the tune directory: trial-NNNN/ run directories live here
    runs_dir: Path


@dataclass
class Outcome:
    number: int
    values: dict[str, Any]
    state: str  # complete | pruned | failed | interrupted
    value: float | None = None
    epochs: int = 0
    message: str = ""
    exit_code: int = 0  # 130 / 143 when the trial was stopped by a signal


class TrialReporter(Callback):
    """Reports the objective to optuna after each epoch; stops training when the pruner says
    the trial is not worth more epochs (Hyperband's successive halving)."""

    def __init__(self, trial: optuna.Trial, objective: str, direction: str,
                 prune: bool) -> None:
        self.trial, self.objective, self.direction, self.prune = (
            trial, objective, direction, prune)
        self.best: float | None = None
        self.epochs = 0
        self.pruned_after: int | None = None

    def on_epoch_end(self, epoch, logs, trainer):
        if self.objective not in logs:
            raise UserError(f"search.objective: the epoch logs have no '{self.objective}'",
                            f"choose one of {', '.join(k for k in logs if k != 'learning_rate')}")
        value = float(logs[self.objective])
        self.epochs = epoch + 1
        if math.isfinite(value) and (self.best is None or (
                value > self.best if self.direction == "max" else value < self.best)):
            self.best = value
        self.trial.report(value, epoch + 1)
        last = epoch + 1 >= trainer.config.fit.epochs  # a trial that ran its course is complete
        if self.prune and not last and self.trial.should_prune():
            self.pruned_after = epoch + 1
            trainer.stop_training = True


def run_trial(search: Search, study: optuna.Study, trial: optuna.Trial, console: Console,
              quiet: bool, prefix: str = "") -> Outcome:
    """Train one trial and tell optuna how it went. In a worker process (a `prefix`), a
    signal's stop is announced by the process that started the workers."""
    from nntrain import commands

    values = space.suggest(trial, search.dims)
    outcome = Outcome(trial.number, values, "failed")
    run_path = search.folder / f"trial-{trial.number:04d}"
    trial.set_user_attr("run", str(run_path))
    shown = "  ".join(f"{k}={space.format_value(v)}" for k, v in values.items())
    retry = trial.user_attrs.get("retry_of")
    console.print(f"{prefix}[bold]Trial {trial.number}[/]"
                  + (f" (again, for interrupted trial {retry})" if retry is not None else "")
                  + f": {shown}", soft_wrap=True, highlight=False)
    reporter = TrialReporter(trial, search.objective, search.direction, search.prune)
    try:
        with studies.heartbeat(study, trial):
            try:
                loaded = validate_config(space.apply(search.raw, search.dims, values),
                                         search.source, search.positions, search.overrides)
                code = commands.fit(None, [], search.runs_dir, console, quiet=quiet,
                                    loaded=loaded, run_path=run_path, callbacks=[reporter],
                                    say_stops=not prefix)
            except DataError as e:
                if isinstance(e, DataModelMismatch) or any(d.path[:1] == ("data",)
                                                           for d in search.dims):
                    outcome.message, code = e.message, None  # the values' doing
                else:  # the data itself (a file missing, damaged): every trial would fail
                    trial.set_user_attr("interrupted", True)
                    study.tell(trial, state=TrialState.FAIL)  # not counted, and run again
                    studies.retry(study, trial)  # once the data is fixed
                    raise
            except (ConfigError, TrainingFailed, UserError) as e:
                # these values make a bad model (a shape that does not fit, a loss that
                # diverges): a result of the search, not a reason to stop it
                outcome.message = getattr(e, "message", None) or str(e)
                code = None
    except KeyboardInterrupt:
        code = 130
    outcome.epochs = reporter.epochs
    outcome.value = reporter.best
    if code and _trained(run_path):  # stopped in its test evaluation, after training ended:
        outcome.exit_code, code = code, 0  # a finished trial; the search stops after it
    if code is None:
        trial.set_user_attr("failure", outcome.message.splitlines()[0][:500])
        study.tell(trial, state=TrialState.FAIL)
    elif code:  # stopped by a signal: not a result; queued to run again from the start
        outcome.state, outcome.exit_code = "interrupted", code
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        studies.retry(study, trial)
    elif reporter.pruned_after is not None:
        outcome.state = "pruned"
        trial.set_user_attr("best", reporter.best)
        study.tell(trial, state=TrialState.PRUNED)
        _note_pruned(run_path, reporter.pruned_after)
    elif reporter.best is None:
        outcome.message = f"no finite {search.objective} in any epoch"
        trial.set_user_attr("failure", outcome.message)
        study.tell(trial, state=TrialState.FAIL)
    else:
        outcome.state = "complete"
        study.tell(trial, reporter.best)
    return outcome


def _trained(run_path: Path) -> bool:
    from nntrain.runs import RUN_FILE, Run

    return (Run(run_path).try_read_json(RUN_FILE) or {}).get("status") == "completed"


def _note_pruned(run_path: Path, epoch: int) -> None:
    from nntrain.runs import Run

    run = Run(run_path)
    if run.info():
        run.update_info(stop_reason=f"pruned by the search after epoch {epoch}")
