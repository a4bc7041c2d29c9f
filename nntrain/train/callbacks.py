"""Keras's callbacks. Each sees the epoch's logs and may stop training, save weights or
change the learning rate; each can hand its state to a checkpoint and take it back, so
`--resume` continues exactly. A user's own callback (`module:Class`) is any class with some of
Keras's hook methods; it reaches the trainer through `self.model`, with Keras's names."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import inspect
import io
import json
import math
import operator
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ValidationError

from nntrain.config.callbacks import (
    RESERVED_CHECKPOINTS,
    CSVLoggerArgs,
    EarlyStoppingArgs,
    LearningRateSchedulerArgs,
    ModelCheckpointArgs,
    ReduceLROnPlateauArgs,
    SwapEMAWeightsArgs,
    TensorBoardArgs,
    TerminateOnNaNArgs,  # noqa: F401 - fit.py finds every callback's arguments here
    is_checkpoint_name,
    resolve_mode,
)
from nntrain.config.compile import is_schedule, schedule_of
from nntrain.config.entries import CustomEntry, entry_args, entry_name
from nntrain.config.loader import ConfigError, LoadedConfig, closest, format_path
from nntrain.custom import load_object
from nntrain.errors import UserCodeError, UserError
from nntrain.fsutil import disk_space
from nntrain.lazy import jax
from nntrain.optimizers import (
    ScheduledLearningRate,
    build_schedule,
    get_learning_rate,
    set_learning_rate,
)


class Trainer(Protocol):
    stop_training: bool
    config: Any  # the run's validated config (nntrain.config.schema.Config)
    carry: dict[str, Any]  # params, state, opt_state (the learning rate is in it), step
    history: list[dict[str, float]]
    run: Any  # the run directory (nntrain.runs.Run)
    console: Any
    quiet: bool
    steps_per_epoch: int
    programs: Any  # the compiled programs (nntrain.train.programs.Programs): steps_per_call
    checkpointer: Any  # the ModelCheckpoint that keeps checkpoints/best

    @property
    def resume_step(self) -> int: ...  # where the next epoch starts: 0, or a resumed step

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

    numeric_state = False  # nntrain's own: every state value is a number or None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def check_state(self) -> None:
        """Raises ValueError for a loaded state this callback cannot have had (a record
        changed by hand)."""
        if not self.numeric_state:
            return
        for key, value in self.state().items():
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, int | float)):
                raise ValueError(f"{key} is {value!r}, not a number")


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
    numeric_state = True

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
        if self.args.verbose and self.stopped_epoch is not None:
            _say(trainer, f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.args.restore_best_weights and self.best_weights is not None:
            if self.args.verbose and self.tracker.best_epoch is not None:
                _say(trainer, "Restoring model weights from the end of the best epoch: "
                              f"{self.tracker.best_epoch + 1}.")
            trainer.set_weights(self.best_weights)

    def state(self):
        return {"wait": self.wait, "best": self.tracker.best,
                "best_epoch": self.tracker.best_epoch, "stopped_epoch": self.stopped_epoch}

    def load_state(self, state):
        self.wait = state["wait"]
        self.tracker.best, self.tracker.best_epoch = state["best"], state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]


class ModelCheckpoint(Callback):
    """Keeps `checkpoints/best` at the best epoch by `monitor` (the run's first
    model_checkpoint: evaluate, predict and the test figures read it); without
    `save_best_only`, also keeps each epoch's weights under `filepath`. A further
    model_checkpoint writes under its `filepath` only: each epoch, or with `save_best_only`
    when its own figure improves, as Keras's does."""

    numeric_state = True

    def __init__(self, args: ModelCheckpointArgs, keeps_best: bool = True,
                 follows: EarlyStopping | None = None) -> None:
        self.args = args
        self.keeps_best = keeps_best
        # following early stopping, `best` is the epoch restore_best_weights would restore
        self.tracker = Monitor(args.monitor, args.mode, follows.args.min_delta if follows else 0)
        self.first_epoch = follows.args.start_from_epoch if follows else 0

    def on_epoch_end(self, epoch, logs, trainer):
        # the value to beat: the best so far, else initial_value_threshold (never reported
        # as a best value itself)
        before, value = self.tracker.best, logs[self.args.monitor]
        if before is None:
            before = self.args.initial_value_threshold
        improved = epoch >= self.first_epoch and self.tracker.improves(value, before) and \
            self.tracker.update(epoch, value)
        if self.args.verbose and self.args.save_best_only:  # Keras's words
            if before is None:
                before = -math.inf if self.tracker.mode == "max" else math.inf
            _say(trainer, f"Epoch {epoch + 1}: {self.args.monitor} improved from {before:.5f} "
                          f"to {value:.5f}, saving model" if improved else
                          f"Epoch {epoch + 1}: {self.args.monitor} did not improve from "
                          f"{before:.5f}")
        elif self.args.verbose:
            _say(trainer, f"Epoch {epoch + 1}: saving model")
        if improved and self.keeps_best:
            trainer.save_weights("best", epoch, logs)
        if not self.args.save_best_only or (improved and not self.keeps_best):
            # the fields were checked against the logs' names, the specs on sample values
            name = self.args.filepath.format(**logs, epoch=epoch + 1)
            if not is_checkpoint_name(name) or name in RESERVED_CHECKPOINTS:
                raise UserError(f"model_checkpoint: filepath {self.args.filepath!r} makes "
                                f"{name!r} at epoch {epoch + 1}, not a folder name of its "
                                "own in checkpoints/", "format {epoch} as a number, e.g. "
                                "epoch-{epoch:03d}")
            trainer.save_weights(name, epoch, logs)

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


class SwapEMAWeights(Callback):
    """Keras's SwapEMAWeights. Listed, it has the trainer validate on the optimizer's moving
    average of the weights (`Trainer.validation_params`); with `swap_on_epoch`, the callbacks
    after it at an epoch's end see the average as the model's weights (a checkpoint keeps
    it). Training, and its resume checkpoint, go on from the weights themselves, which
    Keras swaps back as the next epoch begins."""

    def __init__(self, args: SwapEMAWeightsArgs) -> None:
        self.args = args

    def on_epoch_end(self, epoch, logs, trainer):
        if self.args.swap_on_epoch:
            trainer.ema_in_model = True


class ReduceLROnPlateau(Callback):
    """Keras's ReduceLROnPlateau, step for step: its `wait`, `cooldown_counter` and best value
    are its state, so `--resume` continues the count; the rate itself is in the optimizer's
    state, which the checkpoint keeps."""

    numeric_state = True

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
        with disk_space("the CSV log", self.path), \
                self.path.open("a", encoding="utf-8", newline="") as f:
            f.write(text)
        self.lines += text.count("\n")

    def state(self):
        return {"lines": self.lines}

    def load_state(self, state):
        self.resume_lines = state["lines"]

    def check_state(self) -> None:
        lines = self.resume_lines
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ValueError(f"lines is {lines!r}, not a count of lines")


TENSORBOARD_HINT = "pip install 'nntrain[tensorboard]'"


def _summary_writer() -> type:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise UserError(f"the tensorboard callback needs the tensorboardX package ({e})",
                        TENSORBOARD_HINT) from None
    return SummaryWriter


def write_hparams_session(folder: Path, hparams: dict[str, Any], metrics: dict[str, float],
                          step: int, writer_class: type, suffix: str = "") -> None:
    """One session of TensorBoard's HPARAMS view in `folder`: the hyperparameters and the
    figures they gave. It replaces the session an earlier process wrote there (one per run;
    `nntrain tune` writes one per trial)."""
    from tensorboardX.summary import hparams as hparams_summaries

    older = list(folder.glob("events.out.tfevents.*")) if folder.exists() else []
    experiment, start, end = hparams_summaries(hparams, metrics)
    writer = writer_class(logdir=str(folder),
                          filename_suffix=suffix or f".{time.time_ns()}.{os.getpid()}")
    try:
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary, step)
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
    finally:
        writer.close()
    for path in older:
        path.unlink(missing_ok=True)


class TensorBoard(Callback):
    """Keras's TensorBoard callback, written with tensorboardX. Per epoch, at step `epoch`
    (from 0): the training figures (loss, metrics, learning_rate) to `<log_dir>/train` and the
    validation figures, without `val_`, to `<log_dir>/validation`, each tagged `epoch_<name>`
    as Keras tags them. At the start, the config as text; at the end, a few hyperparameters
    with the best and last figures for the HPARAMS view, in `<log_dir>/hparams`.

    `--resume` appends: the writers open new event files beside the old ones (names carry the
    process id and a random part, so nothing is overwritten) and start with a purge marker at
    the first epoch they redo, so TensorBoard hides figures of epochs the checkpoint did not
    keep. The HPARAMS record is rewritten at each end: it sums up the whole run.

    `profile_batch` traces training steps with the JAX profiler into
    `<log_dir>/plugins/profile/<time>/`. The loop runs `steps_per_execution` steps per
    compiled call and reports each call one call late (so the device never waits): the trace
    starts before the call holding the first step is dispatched (at the epoch's start when
    that is one of the epoch's first two calls) and stops once the call holding the last step
    has finished. It shows whole calls, and may show the one before and the one after."""

    def __init__(self, args: TensorBoardArgs, run_dir: Path, config: Any = None) -> None:
        self.args, self.config = args, config
        self.log_dir = run_dir / args.log_dir
        if not self.log_dir.resolve().is_relative_to(run_dir.resolve()):
            raise UserError(f"tensorboard: {args.log_dir} leads outside the run directory "
                            f"{run_dir}")
        self.writer_class = _summary_writer()
        self.profile = args.profile_range()
        self.resumed = False
        self.writers: dict[str, Any] = {}
        # event files are read in name order: after the time in seconds, the nanoseconds
        # keep a resumed process's files after the earlier ones; none is ever overwritten
        self.suffix = f".{time.time_ns()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.tracing, self.traced = False, False
        self.steps_per_epoch, self.steps_per_call = 1, 1
        self.epoch = 0

    # -- writers -----------------------------------------------------------------------------
    def _writer(self, name: str, purge_step: int | None = None):
        if name not in self.writers:
            self.writers[name] = self.writer_class(
                logdir=str(self.log_dir / name), purge_step=purge_step, flush_secs=30,
                filename_suffix=self.suffix)
        return self.writers[name]

    def on_train_begin(self, trainer):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        first = len(trainer.history)  # the first epoch this process trains, from 0
        purge = first if self.resumed else None  # hide what a killed process wrote after it
        for name in ("train", "validation"):
            self._writer(name, purge)
        self.steps_per_epoch = trainer.steps_per_epoch
        self.steps_per_call = trainer.programs.steps_per_call
        config_file = trainer.run.path / "config.yaml"
        if config_file.exists():
            text = config_file.read_text(encoding="utf-8")
            # indented: Markdown shows it as code, line breaks kept
            self.writers["train"].add_text(
                "config", "\n".join("    " + line for line in text.splitlines()), first)
            self.writers["train"].flush()
        _say(trainer, f"TensorBoard logs: tensorboard --logdir {self.log_dir}")

    def on_epoch_begin(self, epoch, trainer):
        self.epoch = epoch
        # the epoch's first two calls are dispatched before the first report
        self._maybe_start_trace(trainer.resume_step, 2 * self.steps_per_call, trainer)

    def on_train_batch_end(self, batch, logs, trainer):
        if self.tracing and self._global(batch) >= self.profile[1]:
            self._stop_trace(trainer)
        # the call after this one is already dispatched; the next to dispatch starts at
        next_step = batch + 1 + self.steps_per_call
        if next_step < self.steps_per_epoch:
            self._maybe_start_trace(next_step, self.steps_per_call, trainer)

    def on_epoch_end(self, epoch, logs, trainer):
        if self.tracing and self._global(self.steps_per_epoch - 1) >= self.profile[1]:
            self._stop_trace(trainer)
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        for name, figures in (("train", train), ("validation", validation)):
            if not figures:
                continue
            writer = self.writers[name]
            for key, value in figures.items():
                writer.add_scalar(f"epoch_{key}", float(value), epoch)
            writer.flush()  # a run killed later still shows this epoch

    def on_train_end(self, trainer):
        if self.tracing:
            self._stop_trace(trainer)
        try:
            self._write_hparams(trainer)
        finally:
            for writer in self.writers.values():
                writer.close()
            self.writers = {}

    def state(self):
        return {"traced": self.traced}

    def load_state(self, state):
        self.resumed = True
        self.traced = bool(state.get("traced", False))

    # -- HPARAMS -----------------------------------------------------------------------------
    def hparams(self) -> dict[str, Any]:
        """A few flattened config values, as TensorBoard's HPARAMS view shows them."""
        if self.config is None:
            return {}
        optimizer = self.config.compile.optimizer
        learning_rate = entry_args(optimizer).learning_rate
        return {
            "optimizer": entry_name(optimizer),
            "learning_rate": schedule_of(learning_rate)[0] if is_schedule(learning_rate)
            else float(learning_rate),
            "batch_size": int(self.config.fit.batch_size),
            "epochs": int(self.config.fit.epochs),
            "layers": len(self.config.model.layers),
        }

    def metrics(self, trainer: Trainer) -> dict[str, float]:
        out: dict[str, float] = {}
        tracker = trainer.checkpointer.tracker
        if tracker.best is not None:
            out[f"hparams/best_{tracker.monitor}"] = float(tracker.best)
            out["hparams/best_epoch"] = float(tracker.best_epoch + 1)
        if trainer.history:
            out["hparams/epochs_completed"] = float(len(trainer.history))
            for key, value in trainer.history[-1].items():
                if key not in ("epoch", "seconds"):
                    out[f"hparams/last_{key}"] = float(value)
        return out

    def _write_hparams(self, trainer: Trainer) -> None:
        write_hparams_session(self.log_dir / "hparams", self.hparams(), self.metrics(trainer),
                              len(trainer.history), self.writer_class, self.suffix)

    # -- the profiler ------------------------------------------------------------------------
    def _global(self, batch: int) -> int:
        """Keras's global batch number, from 1 across epochs, of `batch` in this epoch."""
        return self.epoch * self.steps_per_epoch + batch + 1

    def _maybe_start_trace(self, next_step: int, span: int, trainer: Trainer) -> None:
        """Start tracing now if the steps [next_step, next_step + span) of this epoch, which
        are dispatched before the next hook, hold a step to trace (or come after the first)."""
        if self.profile is None or self.tracing or self.traced:
            return
        start, stop = self.profile
        first = self._global(next_step)
        if first + span > start and first <= stop:
            import jax

            trace_dir = self.log_dir  # jax writes plugins/profile/<time>/ under it
            try:
                jax.profiler.start_trace(str(trace_dir))
            except Exception as e:  # another trace is running: leave it alone
                self.traced = True
                _say(trainer, f"TensorBoard: profile_batch skipped: the JAX profiler did not "
                              f"start ({type(e).__name__}: {e})")
                return
            self.tracing = True

    def _stop_trace(self, trainer: Trainer) -> None:
        import jax

        self.tracing, self.traced = False, True
        began = time.perf_counter()
        jax.profiler.stop_trace()
        start, stop = self.profile
        steps = f"step {start}" if start == stop else f"steps {start}-{stop}"
        _say(trainer, f"TensorBoard: profile of training {steps} written to "
                      f"{self.log_dir / 'plugins' / 'profile'} "
                      f"({time.perf_counter() - began:.1f}s)")


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
    (set in on_train_batch_end, it ends the epoch after that chunk; in on_epoch_end, training
    stops after that epoch), `get_weights()` / `set_weights(w)` (`{"params": ...,
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
        # containers of the user's own (the read-only arrays are shared): the same host copy
        # also holds the best weights, which an edit of this dict must not reach
        return jax.tree.map(lambda a: a, self._between_epochs("get_weights()").get_weights())

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
    ends the epoch after that chunk (validation and on_epoch_end run, as in Keras) and
    training with it. An optional `state()` (JSON-able) and
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
            with self._as_theirs(hook):
                function(*args)

    @contextlib.contextmanager
    def _as_theirs(self, method: str) -> Iterator[None]:
        """What the user's code raises is reported as the callback's error, not nntrain's."""
        try:
            yield
        except UserError:
            raise
        except Exception as e:  # the user's code may raise anything
            raise UserCodeError(f"the callback {self.target}: {method} raised "
                                f"{type(e).__name__}: {e}", "fix the callback's code") from None

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
        if not callable(function):
            return {}
        with self._as_theirs("state"):
            state = function()
            try:  # it goes into the checkpoint's JSON
                json.dumps(state, allow_nan=True)
            except (TypeError, ValueError) as e:
                raise UserCodeError(f"the callback {self.target}: state() returned what JSON "
                                    f"cannot store ({e})", "return plain numbers, strings, "
                                    "lists and dicts") from None
        return state

    def load_state(self, state):
        function = getattr(self.obj, "load_state", None)
        if callable(function):
            with self._as_theirs("load_state"):
                function(state)


# -- checks before training --------------------------------------------------------------------
def _search_dirs(loaded) -> list[Path]:
    return [Path(loaded.source).resolve().parent] if loaded.search_dir is None \
        else [loaded.search_dir]


def check_callbacks(loaded: LoadedConfig) -> dict[int, Any]:
    """Check `fit.callbacks` against the rest of the config, and import and check the user
    code they name. Returns the imported classes and functions by callback index; raises
    ConfigError listing every problem."""
    config = loaded.config
    optimizer = config.compile.optimizer
    learning_rate = entry_args(optimizer).learning_rate
    issues, found = [], {}
    written: dict[PurePosixPath, int] = {}  # place -> the callback writing there

    def load(target: str, path: tuple, what: str) -> Any:
        try:
            return load_object(target, _search_dirs(loaded), what)
        except UserError as e:
            issues.append(loaded.issue(path, e.message + (f" ({e.hint})" if e.hint else "")))
            return None

    def claim(index: int, key: tuple, place: str) -> None:
        """The place in the run directory a callback writes to, unless another does."""
        clash = _clash(written, place)
        if clash is not None and not loaded.saved:  # (an older nntrain let a saved run be)
            issues.append(loaded.issue(key, f"fit.callbacks[{clash[0]}] writes to {clash[1]} "
                                       "already; give each callback its own place in the run "
                                       "directory"))
        written.setdefault(PurePosixPath(place), index)

    for i, entry in enumerate(config.fit.callbacks):
        name, args = entry_name(entry), entry_args(entry)
        path = ("fit", "callbacks", i, name)
        if isinstance(args, ReduceLROnPlateauArgs | LearningRateSchedulerArgs) \
                and is_schedule(learning_rate):
            issues.append(loaded.issue(path, (
                f"{name} sets the learning rate, but compile.optimizer.{entry_name(optimizer)}"
                f".learning_rate is a schedule ({schedule_of(learning_rate)[0]}) that sets it "
                f"at every step; use one or the other")))
        elif isinstance(args, SwapEMAWeightsArgs) and not entry_args(optimizer).use_ema:
            issues.append(loaded.issue(path, (
                "swap_ema_weights swaps in the weights' moving average, which the optimizer "
                f"keeps only with compile.optimizer.{entry_name(optimizer)}.use_ema: true; "
                "set it, or remove this callback")))
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
        elif isinstance(args, TensorBoardArgs):
            if importlib.util.find_spec("tensorboardX") is None:
                issues.append(loaded.issue(path, (
                    f"the tensorboard callback needs the tensorboardX package, which is not "
                    f"installed: {TENSORBOARD_HINT}")))
            claim(i, (*path, "log_dir"), args.log_dir)
        elif isinstance(args, CSVLoggerArgs):
            claim(i, (*path, "filename"), args.filename)
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


def _clash(written: dict[PurePosixPath, int], place: str) -> tuple[int, PurePosixPath] | None:
    """The callback that already writes where this one would (the same place, or a place
    inside the other: a tensorboard folder's train/ and validation/ are its own), and its
    place; or None."""
    path = PurePosixPath(place)
    for other, index in written.items():
        if other == path or other in path.parents or path in other.parents:
            return index, other
    return None


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
