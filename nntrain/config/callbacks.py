"""What a user may write in `fit.callbacks`: Keras's callback names and defaults, and
`module:Class` for a user's own callback."""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
)

from nntrain.config.compile import schedule_type
from nntrain.config.entries import Args, Registry, is_custom

Mode = Literal["auto", "min", "max"]
Verbose = Annotated[int, Field(ge=0, le=2)]


class CustomCallbackArgs(Args):
    """Arguments of a user's callback class: open, given to its `__init__` as keywords (and
    checked by the class's own pydantic `Args` if it has one)."""

    model_config = ConfigDict(extra="allow")


CALLBACKS = Registry("callback", custom_args=CustomCallbackArgs)


class MonitorArgs(Args):
    monitor: str = "val_loss"
    mode: Mode = "auto"


@CALLBACKS.register("early_stopping", "EarlyStopping")
class EarlyStoppingArgs(MonitorArgs):
    min_delta: NonNegativeFloat = 0.0
    patience: NonNegativeInt = 0
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: NonNegativeInt = 0
    verbose: Verbose = 0  # 1: Keras's messages on stopping and restoring


def resolve_mode(monitor: str, mode: str) -> str:
    """Keras's `auto`: maximise the metrics whose direction is up (accuracies, AUC,
    precision, recall), minimise everything else. A second metric of a kind is named with a
    count (`precision_1`), which Keras cannot resolve; its kind decides here."""
    if mode != "auto":
        return mode
    kind = re.sub(r"_\d+$", "", monitor)
    return "max" if kind.endswith(("acc", "accuracy", "auc", "precision", "recall")) \
        else "min"


RESERVED_CHECKPOINTS = ("best", "last", "last.prev")  # nntrain's own, in checkpoints/
# the longest file or folder name a config may ask for: 255 bytes on most file systems, less
# room for the suffixes of files being written
NAME_BYTES = 200


def checkpoint_fields(filepath: str) -> list[str]:
    """The `{field}` names a checkpoint filepath formats: `epoch` and logged figures."""
    return [field for _, field, _, _ in string.Formatter().parse(filepath) if field is not None]


# epochs and figures a filepath's format specs are tried on
SAMPLE_VALUES = [(1, 0.5), (46, -3.25), (47, 1e12), (92, float("nan")), (1000, float("inf"))]


def is_checkpoint_name(name: str) -> bool:
    """A name for a folder directly in checkpoints/: no path, nothing hidden."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _checkpoint_filepath(value: str) -> str:
    """Keras's `filepath` as a folder name in checkpoints/: `{epoch}` and logged figures
    (`weights.{epoch:02d}-{val_loss:.2f}`), no path, not one of nntrain's own names."""
    try:
        fields = checkpoint_fields(value)
    except ValueError as e:
        raise ValueError(f"not a valid pattern ({e}); write fields as {{epoch:03d}}") from None
    for field in fields:
        if not field.isidentifier():
            raise ValueError(f"'{{{field}}}' is not a field name: use {{epoch}} or a logged "
                             "figure such as {val_loss:.4f}")
    try:  # the format specs, tried on values like those they will get
        name, *others = [value.format(**{f: epoch if f == "epoch" else figure for f in fields})
                         for epoch, figure in SAMPLE_VALUES]
    except (TypeError, ValueError) as e:
        raise ValueError(f"a format spec does not fit its value ({e}): {{epoch}} is an "
                         "integer, the figures are floats") from None
    if name in RESERVED_CHECKPOINTS or name.endswith((".prev", ".damaged")) or \
            name.startswith("."):
        raise ValueError(f"'{name}' is a name nntrain keeps for itself in checkpoints/ "
                         f"({', '.join(RESERVED_CHECKPOINTS)}, *.prev, *.damaged, hidden "
                         "files): choose another, e.g. epoch-{epoch:03d}")
    for (epoch, _), other in zip(SAMPLE_VALUES, [name, *others], strict=True):
        if not is_checkpoint_name(other):  # `{epoch:c}` makes '/' of epoch 47
            raise ValueError(f"it makes {other!r} at epoch {epoch}, which is not a plain "
                             "folder name: format {epoch} as a number, e.g. {epoch:03d}")
        if len(other.encode()) > NAME_BYTES:
            raise ValueError(f"it makes a name of {len(other.encode())} bytes at epoch {epoch}, "
                             f"more than a file system takes ({NAME_BYTES} here, leaving room "
                             "for the suffix of a folder being written): shorten it")
    return value


@CALLBACKS.register("model_checkpoint", "ModelCheckpoint")
class ModelCheckpointArgs(MonitorArgs):
    """`checkpoints/best` follows `monitor`; without `save_best_only`, each epoch's weights are
    also kept as `checkpoints/<filepath>`, its fields filled in as Keras does: `{epoch}` with
    the epoch number, `{val_loss:.2f}` and the like with the epoch's figures."""

    save_best_only: bool = False
    # every checkpoint holds the weights, config.yaml the architecture, `last` the optimizer
    # state: accepted for Keras configs, changes nothing
    save_weights_only: bool = False
    filepath: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.{}:-]+$"),
                        AfterValidator(_checkpoint_filepath)] = "epoch-{epoch:03d}"
    save_freq: Literal["epoch"] = "epoch"  # checkpoints are made at epoch ends only
    initial_value_threshold: float | None = None  # the best value to beat at first
    verbose: Verbose = 0  # 1: Keras's message on each save


@CALLBACKS.register("terminate_on_nan", "TerminateOnNaN")
class TerminateOnNaNArgs(Args):
    """Always on: a non-finite loss stops training. Listing it is allowed for Keras users."""


@CALLBACKS.register("swap_ema_weights", "SwapEMAWeights")
class SwapEMAWeightsArgs(Args):
    """Keras's SwapEMAWeights, with an optimizer's `use_ema`: validation sees the weights'
    moving average. With `swap_on_epoch`, so do the callbacks after this one at each epoch's
    end (a model_checkpoint then keeps the average), while training goes on from the
    weights themselves."""

    swap_on_epoch: bool = False


@CALLBACKS.register("reduce_lr_on_plateau", "ReduceLROnPlateau")
class ReduceLROnPlateauArgs(MonitorArgs):
    """Keras's ReduceLROnPlateau: after `patience` epochs without an improvement of `monitor`
    by more than `min_delta`, multiply the learning rate by `factor` (not below `min_lr`),
    then wait `cooldown` epochs before counting again."""

    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: NonNegativeInt = 10
    verbose: Verbose = 0
    min_delta: NonNegativeFloat = 1e-4
    cooldown: NonNegativeInt = 0
    min_lr: NonNegativeFloat = 0.0


def _function_name(value: str) -> str:
    if not is_custom(value):
        raise ValueError("expected a schedule (e.g. {exponential_decay: {...}}) or a Python "
                         "function written module:function")
    return value


# a user's function, or a schedule evaluated at the epoch
EpochSchedule = schedule_type("schedule", Annotated[str, AfterValidator(_function_name)])


@CALLBACKS.register("learning_rate_scheduler", "LearningRateScheduler")
class LearningRateSchedulerArgs(Args):
    """Keras's LearningRateScheduler: at the start of each epoch, sets the learning rate to
    `schedule(epoch, lr)` (a user's `module:function`; `function(epoch)` works too), or to a
    declared schedule evaluated at the epoch (from 0)."""

    positional = "schedule"
    schedule: EpochSchedule
    verbose: Verbose = 0


# what fit writes in a run directory itself: a csv_logger may not write over these
RUN_FILES = ("config.yaml", "run.json", "summary.txt", "history.csv", "metrics.json",
             "history.png", "checkpoints", "predictions")


def _relative_to_run(value: str, what: str, example: str) -> str:
    """A path relative to the run directory that stays inside it and leaves fit's own files."""
    windows, path = PureWindowsPath(value), PurePosixPath(value)
    if path.is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(f"give a {what} relative to the run directory (e.g. {example}), "
                         "not an absolute path")
    if "\\" in value:
        raise ValueError("separate folders with '/'")
    if ".." in path.parts:
        raise ValueError(f"the {what} must stay inside the run directory (no '..')")
    if not value.strip() or not path.parts:
        raise ValueError(f"expected a {what} name inside the run directory (e.g. {example})")
    # (case folded: CONFIG.YAML is config.yaml on macOS's and Windows's file systems)
    if path.parts[0].lower() in RUN_FILES:
        raise ValueError(f"{path.parts[0]} is the run's own; choose another name")
    if any(part.startswith(".") for part in path.parts):  # the run's locks and temporaries
        raise ValueError("hidden names (starting with '.') are the run's own; choose another")
    long = next((part for part in path.parts if len(part.encode()) > NAME_BYTES), None)
    if long is not None:
        raise ValueError(f"'{long[:20]}...' is {len(long.encode())} bytes long, more than a "
                         f"file system takes in one name ({NAME_BYTES} here): shorten it")
    return value


def _inside_run(value: str) -> str:
    if value.endswith("/"):
        raise ValueError("expected a file name")
    return _relative_to_run(value, "file", "training.log")


@CALLBACKS.register("csv_logger", "CSVLogger")
class CSVLoggerArgs(Args):
    """Keras's CSVLogger: one row per epoch (`epoch` from 0, then the logs in sorted order) in
    `filename`, relative to the run directory. With `append`, rows go after what the file
    holds; on `--resume` the file keeps the rows of the epochs the checkpoint holds."""

    positional = "filename"
    filename: Annotated[str, AfterValidator(_inside_run)]
    separator: Annotated[str, Field(min_length=1, max_length=1)] = ","
    append: bool = False



def _folder_inside_run(value: str) -> str:
    """A folder relative to the run directory that stays inside it (a trailing '/' is fine)."""
    if value.endswith("/") and value.strip("/"):
        value = value.rstrip("/")
    return _relative_to_run(value, "folder", "tensorboard")


def _ordered(value: int | list[int]) -> int | list[int]:
    if isinstance(value, list) and value[0] > value[1]:
        raise ValueError("a range [start, stop] needs start <= stop")
    return value


@CALLBACKS.register("tensorboard", "TensorBoard")
class TensorBoardArgs(Args):
    """Keras's TensorBoard callback, through tensorboardX (`pip install 'nntrain[tensorboard]'`).
    After each epoch, the training figures go to `<log_dir>/train` and the validation ones
    (without `val_`) to `<log_dir>/validation`, tagged `epoch_loss`, `epoch_accuracy`, ...,
    `epoch_learning_rate`, at step `epoch` (from 0), as Keras writes them. The config is
    written as text at the start; hyperparameters and the best and last figures go to the
    HPARAMS view (`<log_dir>/hparams`) at the end. `--resume` appends to the same folders.

    `profile_batch`: 0 is off; N, or [start, stop], captures a JAX profiler trace of those
    training steps (counted from 1 across epochs, as Keras counts batches) into
    `<log_dir>/plugins/profile`. Steps run in compiled chunks (`fit.steps_per_execution`), so
    the trace holds the whole chunks that contain those steps. `write_graph` is accepted for
    Keras configs and ignored: a JAX program has no TensorFlow graph to draw."""

    positional = "log_dir"
    log_dir: Annotated[str, AfterValidator(_folder_inside_run)] = "tensorboard"
    update_freq: Literal["epoch"] = "epoch"
    profile_batch: Annotated[
        NonNegativeInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)],
        AfterValidator(_ordered),
    ] = 0
    write_graph: bool = True

    def profile_range(self) -> tuple[int, int] | None:
        """The training steps to trace, counted from 1 across epochs; None: no trace."""
        if isinstance(self.profile_batch, list):
            return self.profile_batch[0], self.profile_batch[1]
        return (self.profile_batch, self.profile_batch) if self.profile_batch else None
