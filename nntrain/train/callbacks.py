"""Keras's callbacks. Each sees the epoch's logs and may stop training, save weights or
change the learning rate; each can hand its state to a checkpoint and take it back, so
`--resume` continues exactly. A user's own callback (`module:Class`) is any class with some of
Keras's hook methods; it reaches the trainer through `self.model`, with Keras's names."""

from __future__ import annotations

import csv
import inspect
import io
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ValidationError

from nntrain.config.callbacks import (
    CSVLoggerArgs,
    EarlyStoppingArgs,
    LearningRateSchedulerArgs,
    ModelCheckpointArgs,
    ReduceLROnPlateauArgs,
    TerminateOnNaNArgs,  # noqa: F401 - fit.py finds every callback's arguments here
)
from nntrain.config.compile import is_schedule, schedule_of
from nntrain.config.entries import CustomEntry, entry_args, entry_name
from nntrain.config.loader import ConfigError, closest, format_path
from nntrain.custom import load_object
from nntrain.errors import UserError
from nntrain.optimizers import (
    ScheduledLearningRate,
    build_schedule,
    get_learning_rate,
    set_learning_rate,
)


class Trainer(Protocol):
    stop_training: bool
    carry: dict[str, Any]  # params, state, opt_state (the learning rate is in it), step
    history: list[dict[str, float]]
    run: Any  # the run directory (nntrain.runs.Run)
    console: Any
    quiet: bool

    def get_weights(self) -> dict[str, Any]: ...
    def set_weights(self, weights: dict[str, Any]) -> None: ...
    def save_weights(self, name: str, epoch: int, logs: dict[str, float]) -> None: ...


class Callback:
    """Hooks with Keras's names; `state` is what a checkpoint keeps."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict[str, float],
                           trainer: Trainer) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def resolve_mode(monitor: str, mode: str) -> str:
    """Keras's `auto`: maximise accuracies and AUC, minimise everything else."""
    if mode != "auto":
        return mode
    return "max" if monitor.endswith(("acc", "accuracy", "auc")) else "min"


class Monitor:
    """The best value of one logged figure so far."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.better = operator.gt if self.mode == "max" else operator.lt
        self.min_delta = min_delta if self.mode == "max" else -min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None

    def improves(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return not math.isnan(value)
        return bool(self.better(value - self.min_delta, reference))

    def update(self, epoch: int, value: float) -> bool:
        if self.improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStopping(Callback):
    def __init__(self, args: EarlyStoppingArgs) -> None:
        self.args = args
        self.tracker = Monitor(args.monitor, args.mode, args.min_delta)
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None

    def on_epoch_end(self, epoch, logs, trainer):
        if epoch < self.args.start_from_epoch:
            return
        value = logs[self.args.monitor]
        if self.args.restore_best_weights and self.best_weights is None:
            self.best_weights = trainer.get_weights()  # Keras: the first epoch's weights
        self.wait += 1
        if self.tracker.update(epoch, value):
            if self.args.restore_best_weights:
                self.best_weights = trainer.get_weights()
            if self.args.baseline is None or self.tracker.improves(value, self.args.baseline):
                self.wait = 0
            return
        if self.wait >= self.args.patience and epoch > 0:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.args.restore_best_weights and self.best_weights is not None:
            trainer.set_weights(self.best_weights)

    def state(self):
        return {"wait": self.wait, "best": self.tracker.best,
                "best_epoch": self.tracker.best_epoch, "stopped_epoch": self.stopped_epoch}

    def load_state(self, state):
        self.wait = state["wait"]
        self.tracker.best, self.tracker.best_epoch = state["best"], state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]


class ModelCheckpoint(Callback):
    """Keeps `checkpoints/best` at the best epoch by `monitor`; without `save_best_only`, also
    keeps each epoch's weights under `filepath`."""

    def __init__(self, args: ModelCheckpointArgs) -> None:
        self.args = args
        self.tracker = Monitor(args.monitor, args.mode)

    def on_epoch_end(self, epoch, logs, trainer):
        if self.tracker.update(epoch, logs[self.args.monitor]):
            trainer.save_weights("best", epoch, logs)
        if not self.args.save_best_only:
            trainer.save_weights(self.args.filepath.format(epoch=epoch + 1), epoch, logs)

    def state(self):
        return {"best": self.tracker.best, "best_epoch": self.tracker.best_epoch}

    def load_state(self, state):
        self.tracker.best, self.tracker.best_epoch = state["best"], state["best_epoch"]


# -- the learning rate -------------------------------------------------------------------------
def get_lr(trainer: Trainer) -> float:
    return get_learning_rate(trainer.carry["opt_state"])


def set_lr(trainer: Trainer, value: float, who: str) -> None:
    """Replace the learning rate in the optimizer state: same shapes and dtypes, so the
    compiled programs run on without recompiling."""
    try:
        opt_state = set_learning_rate(trainer.carry["opt_state"], value)
    except ScheduledLearningRate:
        raise UserError(
            f"{who} sets the learning rate, but the optimizer's learning_rate is a schedule, "
            "which sets it at every step",
            "give the optimizer a number as learning_rate, or drop the callback") from None
    trainer.carry = {**trainer.carry, "opt_state": opt_state}


def as_rate(value: Any, what: str) -> float:
    """A learning rate a user's code gave: a finite, non-negative real number."""
    try:
        rate = float(np.asarray(value)) if not isinstance(value, bool | str) else math.nan
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 0):
        raise UserError(f"{what} gave {value!r}; a learning rate is a finite number >= 0")
    return rate


def _say(trainer: Trainer, text: str) -> None:
    if not trainer.quiet:
        trainer.console.print(text, highlight=False, soft_wrap=True)


class ReduceLROnPlateau(Callback):
    """Keras's ReduceLROnPlateau, step for step: its `wait`, `cooldown_counter` and best value
    are its state, so `--resume` continues the count; the rate itself is in the optimizer's
    state, which the checkpoint keeps."""

    def __init__(self, args: ReduceLROnPlateauArgs) -> None:
        self.args = args
        self.tracker = Monitor(args.monitor, args.mode, args.min_delta)
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs, trainer):
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.tracker.update(epoch, logs[self.args.monitor]):
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.args.patience:
            return
        old = get_lr(trainer)
        if old > float(np.float32(self.args.min_lr)):
            new = max(old * self.args.factor, self.args.min_lr)
            set_lr(trainer, new, "reduce_lr_on_plateau")
            if self.args.verbose:
                _say(trainer, f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                              f"to {new:.6g}.")
            self.cooldown_counter = self.args.cooldown
            self.wait = 0

    def state(self):
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter,
                "best": self.tracker.best, "best_epoch": self.tracker.best_epoch}

    def load_state(self, state):
        self.wait, self.cooldown_counter = state["wait"], state["cooldown_counter"]
        self.tracker.best, self.tracker.best_epoch = state["best"], state["best_epoch"]


def positional_arity(function: Callable) -> int:
    """2 for `f(epoch, lr)`, 1 for `f(epoch)` (Keras's older form), 0 for neither."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return 2
    for args in ((0, 0.1), (0,)):
        try:
            signature.bind(*args)
            return len(args)
        except TypeError:
            continue
    return 0


class LearningRateScheduler(Callback):
    """Keras's LearningRateScheduler: at each epoch's start, the rate becomes
    `function(epoch, lr)` (`function(epoch)` works too), or a declared schedule evaluated at
    the epoch (from 0). Nothing to keep for `--resume`: the rate is recomputed each epoch."""

    def __init__(self, args: LearningRateSchedulerArgs, function: Callable | None = None) -> None:
        self.args = args
        self.function = function
        if function is None:
            self.schedule = build_schedule(args.schedule)
            self.name = schedule_of(args.schedule)[0]
        else:
            self.arity = positional_arity(function)
            self.name = str(args.schedule)

    def on_epoch_begin(self, epoch, trainer):
        if self.function is None:
            value = self.schedule(epoch)
        elif self.arity == 1:
            value = self.function(epoch)
        else:
            value = self.function(epoch, get_lr(trainer))
        rate = as_rate(value, f"learning_rate_scheduler: {self.name} at epoch {epoch}")
        set_lr(trainer, rate, "learning_rate_scheduler")
        if self.args.verbose:
            _say(trainer, f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                          f"{rate:.6g}.")


class CSVLogger(Callback):
    """Keras's CSVLogger: a header `epoch,<logs in sorted order>`, then one row per epoch with
    `epoch` from 0, written and flushed at each epoch's end. The file is relative to the run
    directory and stays inside it. Its state is how many lines the file had at the last
    checkpoint, so `--resume` drops rows of epochs it is about to redo."""

    def __init__(self, args: CSVLoggerArgs, run_dir: Path) -> None:
        self.args = args
        self.path = run_dir / args.filename
        if not self.path.resolve().is_relative_to(run_dir.resolve()):
            raise UserError(f"csv_logger: {args.filename} leads outside the run directory "
                            f"{run_dir}")
        self.keys: list[str] | None = None
        self.lines = 0
        self.resume_lines: int | None = None

    def _read_lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def on_train_begin(self, trainer):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_lines is not None:
            kept = [line for line in self._read_lines()[:self.resume_lines]
                    if line.endswith("\n")]
            self.path.write_text("".join(kept), encoding="utf-8")
        elif not self.args.append:
            self.path.write_text("", encoding="utf-8")
        self.lines = len(self._read_lines())

    def on_epoch_end(self, epoch, logs, trainer):
        if self.keys is None:
            self.keys = sorted(logs)
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.args.separator, lineterminator="\n")
        if self.lines == 0:
            writer.writerow(["epoch", *self.keys])
        writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
        text = buffer.getvalue()
        with self.path.open("a", encoding="utf-8", newline="") as f:
            f.write(text)
        self.lines += text.count("\n")

    def state(self):
        return {"lines": self.lines}

    def load_state(self, state):
        self.resume_lines = state["lines"]


# -- a user's own callback ---------------------------------------------------------------------
HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_end")


class OptimizerView:
    """`self.model.optimizer` in a user's callback: `learning_rate`, read and set."""

    def __init__(self, model: ModelView) -> None:
        self._model = model

    @property
    def learning_rate(self) -> float:
        return get_lr(self._model._between_epochs("optimizer.learning_rate"))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        set_lr(self._model._between_epochs("optimizer.learning_rate"),
               as_rate(value, "model.optimizer.learning_rate"),
               "a callback (model.optimizer.learning_rate)")


class ModelView:
    """What a user's callback sees as `self.model`, with Keras's names: `stop_training`
    (set it to stop after this epoch), `get_weights()` / `set_weights(w)` (`{"params": ...,
    "state": ...}`, numpy arrays keyed by layer name), `optimizer.learning_rate` (read and
    set), `history` (the rows of history.csv so far) and `run_dir`. Weights and learning
    rate are there between epochs, not in `on_train_batch_end`: mid-epoch they are being
    updated on the device, chunk after chunk."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self._mid_epoch = False
        self.optimizer = OptimizerView(self)

    def _between_epochs(self, what: str) -> Trainer:
        if self._mid_epoch:
            raise UserError(
                f"self.model.{what} is not available in on_train_batch_end: mid-epoch, the "
                "weights and the optimizer state are being updated on the device",
                "read or change them in on_epoch_begin or on_epoch_end")
        return self._trainer

    @property
    def stop_training(self) -> bool:
        return self._trainer.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._trainer.stop_training = bool(value)

    def get_weights(self) -> dict[str, Any]:
        return self._between_epochs("get_weights()").get_weights()

    def set_weights(self, weights: dict[str, Any]) -> None:
        self._between_epochs("set_weights()").set_weights(weights)

    @property
    def history(self) -> list[dict[str, float]]:
        return [dict(row) for row in self._trainer.history]

    @property
    def run_dir(self) -> Path:
        return self._trainer.run.path


class UserCallback(Callback):
    """A user's object with some of Keras's hooks, called with Keras's arguments. `logs` is a
    copy: changing it changes nothing else. `on_train_batch_end(batch, logs)` runs once per
    compiled chunk of steps (`fit.steps_per_execution`), with `batch` the chunk's last batch
    (from 0) and the epoch's running figures so far; `self.model.stop_training` set there
    stops training at the end of the epoch. An optional `state()` (JSON-able) and
    `load_state(state)` carry the object's own state across `--resume`."""

    def __init__(self, target: str, obj: Any, model: ModelView) -> None:
        self.target, self.obj, self.model = target, obj, model
        self.hooks = {h: getattr(obj, h) for h in HOOKS if callable(getattr(obj, h, None))}
        if callable(getattr(obj, "set_model", None)):
            obj.set_model(model)
        else:
            obj.model = model

    @classmethod
    def create(cls, target: str, klass: type, args: Any, model: ModelView) -> UserCallback:
        kwargs = args.model_dump()
        try:
            obj = klass(**kwargs)
        except Exception as e:  # the user's __init__ may raise anything
            raise UserError(f"creating the callback {target} failed: "
                            f"{type(e).__name__}: {e}") from e
        return cls(target, obj, model)

    def _call(self, hook: str, *args: Any) -> None:
        function = self.hooks.get(hook)
        if function is not None:
            function(*args)

    def on_train_begin(self, trainer):
        self._call("on_train_begin", {})

    def on_epoch_begin(self, epoch, trainer):
        self._call("on_epoch_begin", epoch, {})

    def on_epoch_end(self, epoch, logs, trainer):
        self._call("on_epoch_end", epoch, dict(logs))

    def on_train_batch_end(self, batch, logs, trainer):
        self.model._mid_epoch = True
        try:
            self._call("on_train_batch_end", batch, dict(logs))
        finally:
            self.model._mid_epoch = False

    def on_train_end(self, trainer):
        last = trainer.history[-1] if trainer.history else {}
        self._call("on_train_end", {k: v for k, v in last.items() if k not in ("epoch",
                                                                              "seconds")})

    def state(self):
        function = getattr(self.obj, "state", None)
        return function() if callable(function) else {}

    def load_state(self, state):
        function = getattr(self.obj, "load_state", None)
        if callable(function):
            function(state)


# -- checks before training --------------------------------------------------------------------
def _search_dirs(loaded) -> list[Path]:
    return [Path(loaded.source).resolve().parent] if loaded.search_dir is None \
        else [loaded.search_dir]


def check_callbacks(loaded) -> dict[int, Any]:
    """Check `fit.callbacks` against the rest of the config, and import and check the user
    code they name. Returns the imported classes and functions by callback index; raises
    ConfigError listing every problem."""
    config = loaded.config
    optimizer = config.compile.optimizer
    learning_rate = entry_args(optimizer).learning_rate
    issues, found = [], {}

    def load(target: str, path: tuple, what: str) -> Any:
        try:
            return load_object(target, _search_dirs(loaded), what)
        except UserError as e:
            issues.append(loaded.issue(path, e.message + (f" ({e.hint})" if e.hint else "")))
            return None

    for i, entry in enumerate(config.fit.callbacks):
        name, args = entry_name(entry), entry_args(entry)
        path = ("fit", "callbacks", i, name)
        if isinstance(args, ReduceLROnPlateauArgs | LearningRateSchedulerArgs) \
                and is_schedule(learning_rate):
            issues.append(loaded.issue(path, (
                f"{name} sets the learning rate, but compile.optimizer.{entry_name(optimizer)}"
                f".learning_rate is a schedule ({schedule_of(learning_rate)[0]}) that sets it "
                f"at every step; use one or the other")))
        elif isinstance(args, LearningRateSchedulerArgs) and isinstance(args.schedule, str):
            function = load(args.schedule, (*path, "schedule"), "function")
            if function is not None and not callable(function):
                issues.append(loaded.issue((*path, "schedule"),
                                           f"{args.schedule} is not a function"))
            elif function is not None and positional_arity(function) == 0:
                issues.append(loaded.issue((*path, "schedule"), (
                    f"{args.schedule} must take (epoch, lr) or (epoch)")))
            elif function is not None:
                found[i] = function
        elif isinstance(entry, CustomEntry):
            klass = load(name, path, "class")
            if klass is not None:
                problem = _check_callback_class(name, klass, args.model_dump())
                if problem:
                    issues.append(loaded.issue(path, problem))
                else:
                    found[i] = klass
    if issues:
        raise ConfigError(issues)
    return found


def _check_callback_class(name: str, klass: Any, kwargs: dict[str, Any]) -> str | None:
    if not isinstance(klass, type):
        return f"{name} is not a class"
    if not any(callable(getattr(klass, h, None)) for h in HOOKS):
        return f"{name} is not a callback: it defines none of {', '.join(HOOKS)}"
    args_model = getattr(klass, "Args", None)
    if isinstance(args_model, type) and issubclass(args_model, BaseModel):
        try:
            args_model.model_validate(kwargs)
        except ValidationError as e:
            return "; ".join(f"{format_path(err['loc'])}: {err['msg']}" for err in e.errors())
    try:
        signature = inspect.signature(klass)
    except (TypeError, ValueError):
        return None  # no signature to check (a builtin): creating it will tell
    parameters = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        known = [n for n, p in parameters.items() if p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            close = closest(unknown[0], known)
            return (f"{name} does not take the argument '{unknown[0]}'"
                    + (f"; did you mean '{close}'?" if close else
                       f" (it takes: {', '.join(known) or 'no arguments'})"))
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        return f"{name} does not take these arguments: {e}"
    return None
