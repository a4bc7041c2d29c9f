"""What a user may write in `fit.callbacks`: Keras's callback names and defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from nntrain.config.entries import Args, Registry

CALLBACKS = Registry("callback")

Mode = Literal["auto", "min", "max"]


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


@CALLBACKS.register("model_checkpoint", "ModelCheckpoint")
class ModelCheckpointArgs(MonitorArgs):
    """`checkpoints/best` follows `monitor`; without `save_best_only`, each epoch's weights are
    also kept as `checkpoints/<filepath>` (`{epoch}` is replaced by the epoch number)."""

    save_best_only: bool = False
    save_weights_only: bool = False
    filepath: str = Field("epoch-{epoch:03d}", pattern=r"^[A-Za-z0-9_.{}:-]+$")


@CALLBACKS.register("terminate_on_nan", "TerminateOnNaN")
class TerminateOnNaNArgs(Args):
    """Always on: a non-finite loss stops training. Listing it is allowed for Keras users."""
