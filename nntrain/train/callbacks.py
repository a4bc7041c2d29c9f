"""Keras's callbacks. Each sees the epoch's logs and may stop training or save weights; each
can hand its state to a checkpoint and take it back, so `--resume` continues exactly."""

from __future__ import annotations

import math
import operator
from typing import Any, Protocol

from nntrain.config.callbacks import EarlyStoppingArgs, ModelCheckpointArgs


class Trainer(Protocol):
    stop_training: bool

    def get_weights(self) -> dict[str, Any]: ...
    def set_weights(self, weights: dict[str, Any]) -> None: ...
    def save_weights(self, name: str, epoch: int, logs: dict[str, float]) -> None: ...


class Callback:
    """Hooks with Keras's names; `state` is what a checkpoint keeps."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None: ...
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
