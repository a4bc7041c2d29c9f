"""What a user may write in `compile`: losses, metrics, optimizers and learning-rate
schedules, Keras's names and defaults (Keras's epsilon 1e-7, not optax's 1e-8)."""

from __future__ import annotations

import difflib
import functools
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nntrain.config.entries import Args, LazyEntry, Registry

LOSSES = Registry("loss")
METRICS = Registry("metric")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


# Keras's saved configs name what nntrain has no other choice of: accepted at those values,
# left out of a run's config.yaml
def keras_only(default: Any) -> Any:
    return Field(default, exclude=True)


class LossArgs(Args):
    name: str | None = keras_only(None)  # the logs say `loss` (`<output>_loss`) whatever it is
    reduction: Literal["sum_over_batch_size"] = keras_only("sum_over_batch_size")


class CrossentropyArgs(LossArgs):
    from_logits: bool = False


@LOSSES.register("sparse_categorical_crossentropy")
class SparseCategoricalCrossentropyArgs(CrossentropyArgs):
    ignore_class: None = keras_only(None)


@LOSSES.register("categorical_crossentropy")
class CategoricalCrossentropyArgs(CrossentropyArgs):
    label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0
    axis: Literal[-1] = keras_only(-1)


@LOSSES.register("binary_crossentropy")
class BinaryCrossentropyArgs(CrossentropyArgs):
    label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0
    axis: Literal[-1] = keras_only(-1)


@LOSSES.register("mean_squared_error", "mse")
class MeanSquaredErrorArgs(LossArgs):
    pass


@LOSSES.register("mean_absolute_error", "mae")
class MeanAbsoluteErrorArgs(LossArgs):
    pass


@LOSSES.register("huber")
class HuberArgs(LossArgs):
    positional = "delta"
    delta: PositiveFloat = 1.0


@LOSSES.register("kl_divergence", "kld")
class KLDivergenceArgs(LossArgs):
    pass


@LOSSES.register("cosine_similarity")
class CosineSimilarityArgs(LossArgs):
    pass


class MetricArgs(Args):
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None  # logged as
    dtype: Literal["float32"] = keras_only("float32")

    @field_validator("name")
    @classmethod
    def _not_a_log_of_its_own(cls, name: str | None) -> str | None:
        if name in ("loss", "learning_rate", "seconds", "epoch") or name and (
                name.startswith("val_") or name.endswith("_loss")):
            raise ValueError(f"'{name}' is a name the logs use for another figure (loss, "
                             "*_loss, val_*, learning_rate, seconds, epoch): choose another")
        return name


for _name, _aliases in [
    ("accuracy", ("acc",)),
    ("sparse_categorical_accuracy", ()),
    ("categorical_accuracy", ()),
    ("mean_absolute_error", ("mae",)),
    ("mean_squared_error", ("mse",)),
    ("root_mean_squared_error", ("rmse", "RootMeanSquaredError")),
]:
    METRICS.register(_name, *_aliases)(type(f"{_name}_args", (MetricArgs,), {}))


@METRICS.register("binary_accuracy")
class BinaryAccuracyArgs(MetricArgs):
    positional = "threshold"
    threshold: float = 0.5


@METRICS.register("top_k_categorical_accuracy")
class TopKCategoricalAccuracyArgs(MetricArgs):
    positional = "k"
    k: PositiveInt = 5


@METRICS.register("sparse_top_k_categorical_accuracy")
class SparseTopKCategoricalAccuracyArgs(MetricArgs):
    positional = "k"
    k: PositiveInt = 5


class ThresholdMetricArgs(MetricArgs):
    """Keras's Precision and Recall: an output value above `thresholds` is a positive (with
    `top_k`, the k highest values are); `class_id` scores one output unit only."""

    positional = "thresholds"
    thresholds: Annotated[float, Field(ge=0, le=1)] | None = None  # 0.5, or top-k alone
    top_k: PositiveInt | None = None
    class_id: NonNegativeInt | None = None


@METRICS.register("precision", "Precision")
class PrecisionArgs(ThresholdMetricArgs):
    pass


@METRICS.register("recall", "Recall")
class RecallArgs(ThresholdMetricArgs):
    pass


@METRICS.register("auc", "AUC")
class AUCArgs(MetricArgs):
    """Keras's AUC: the area under the ROC (or precision-recall) curve from confusion counts
    at `num_thresholds` thresholds, interpolated as Keras does."""

    num_thresholds: Annotated[int, Field(gt=1)] = 200
    curve: Literal["ROC", "PR"] = "ROC"
    summation_method: Literal["interpolation"] = "interpolation"
    from_logits: bool = False
    multi_label: Literal[False] = keras_only(False)
    num_labels: None = keras_only(None)
    label_weights: None = keras_only(None)


# -- learning-rate schedules -------------------------------------------------------------------
# Steps are optimizer steps, counted from 0 for the first update (Keras's `iterations`, optax's
# `count`). In `learning_rate_scheduler`, the same schedules take the epoch (from 0) instead.


class ScheduleArgs(Args):
    name: str | None = keras_only(None)  # Keras's saved schedules name themselves


@SCHEDULES.register("constant")
class ConstantArgs(ScheduleArgs):
    """The same rate at every step; in an optimizer, the same as writing the number."""

    positional = "value"
    value: PositiveFloat


@SCHEDULES.register("exponential_decay", "ExponentialDecay")
class ExponentialDecayArgs(ScheduleArgs):
    """Keras's ExponentialDecay: `initial_learning_rate * decay_rate ** (step / decay_steps)`,
    the exponent floored with `staircase`."""

    initial_learning_rate: PositiveFloat
    decay_steps: PositiveInt
    decay_rate: PositiveFloat
    staircase: bool = False


@SCHEDULES.register("piecewise_constant", "piecewise_constant_decay", "PiecewiseConstantDecay")
class PiecewiseConstantArgs(ScheduleArgs):
    """Keras's PiecewiseConstantDecay: `values[0]` while step <= boundaries[0], `values[i]`
    while boundaries[i-1] < step <= boundaries[i], `values[-1]` after the last boundary."""

    boundaries: Annotated[list[NonNegativeInt], Field(min_length=1)]
    values: Annotated[list[NonNegativeFloat], Field(min_length=2)]

    @model_validator(mode="after")
    def _one_more_value(self) -> PiecewiseConstantArgs:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"give one value more than boundaries: {len(self.boundaries)} "
                             f"boundaries need {len(self.boundaries) + 1} values, "
                             f"found {len(self.values)}")
        if any(b >= a for b, a in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError(f"boundaries must increase, found {self.boundaries}")
        return self


@SCHEDULES.register("cosine_decay", "CosineDecay")
class CosineDecayArgs(ScheduleArgs):
    """Keras's CosineDecay: from `initial_learning_rate` down to `alpha` times it over
    `decay_steps`; with `warmup_target`, first a linear warmup to it over `warmup_steps`."""

    initial_learning_rate: NonNegativeFloat
    decay_steps: PositiveInt
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.0
    warmup_target: PositiveFloat | None = None
    warmup_steps: NonNegativeInt = 0

    @model_validator(mode="after")
    def _warmup_needs_target(self) -> CosineDecayArgs:
        if self.warmup_steps and self.warmup_target is None:
            raise ValueError("warmup_steps needs warmup_target (the rate to warm up to)")
        if self.warmup_target is None and self.initial_learning_rate == 0:
            raise ValueError("initial_learning_rate must be greater than 0 without warmup")
        return self


@SCHEDULES.register("warmup_cosine_decay")
class WarmupCosineDecayArgs(ScheduleArgs):
    """optax's warmup_cosine_decay_schedule: linear from `init_value` to `peak_value` over
    `warmup_steps`, then cosine down to `end_value`; `decay_steps` counts the warmup too."""

    init_value: NonNegativeFloat = 0.0
    peak_value: PositiveFloat
    warmup_steps: NonNegativeInt
    decay_steps: PositiveInt
    end_value: NonNegativeFloat = 0.0
    exponent: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _decay_after_warmup(self) -> WarmupCosineDecayArgs:
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps ({self.decay_steps}) counts the warmup too: it must "
                             f"be greater than warmup_steps ({self.warmup_steps})")
        return self


@SCHEDULES.register("one_cycle", "cosine_onecycle")
class OneCycleArgs(ScheduleArgs):
    """optax's cosine_onecycle_schedule (Smith's 1cycle): from `peak_value / div_factor` up to
    `peak_value` over the first `pct_start` of `transition_steps` (the cycle's total steps),
    then down to `peak_value / (div_factor * final_div_factor)`."""

    transition_steps: PositiveInt
    peak_value: PositiveFloat
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    div_factor: PositiveFloat = 25.0
    final_div_factor: PositiveFloat = 1e4


def schedule_type(scalar_tag: str, scalar: Any) -> Any:
    """A value that is either `scalar` (a number, a function name) or one schedule written
    `{name: {arguments}}`. `scalar_tag` is the field's own name, so that error locations read
    `learning_rate.exponential_decay.decay_steps`, never a union's internal tag."""
    # one model per name, shared by every field, made the first time a config names it
    members = [Annotated[scalar, Tag(scalar_tag)]] + [
        Annotated[Any, LazyEntry(name, functools.partial(SCHEDULES.entry_model, name)), Tag(name)]
        for name in SCHEDULES.names]

    def tag_of(value: Any) -> str | None:
        if isinstance(value, dict):
            return next(iter(value)) if len(value) == 1 else None
        if isinstance(value, BaseModel):
            return next(iter(type(value).model_fields))
        return scalar_tag

    def expand(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if SCHEDULES.is_serialized(value):  # serialize_keras_object's own form
            value = {SCHEDULES.spelled(value["class_name"]): value.get("config") or {}}
        if len(value) != 1:
            raise ValueError(
                f"a schedule is one name mapped to its arguments, e.g. {{exponential_decay: "
                f"{{initial_learning_rate: 0.01, decay_steps: 1000, decay_rate: 0.9}}}}; found "
                f"{len(value)} keys ({', '.join(map(str, value))})")
        (name, args), = value.items()
        name = SCHEDULES.spelled(name)
        if not isinstance(name, str) or name not in SCHEDULES.names:
            close = difflib.get_close_matches(str(name), SCHEDULES.names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else \
                f" (schedules: {', '.join(SCHEDULES.args)})"
            raise ValueError(f"unknown schedule {name!r}{hint}")
        cls = SCHEDULES.args[SCHEDULES.canonical(name)]
        if args is None:
            args = {}
        if cls.positional and not isinstance(args, dict):
            args = {cls.positional: args}
        return {name: args}

    return Annotated[
        Union[tuple(members)],  # noqa: UP007 - a runtime-built union
        Discriminator(tag_of, custom_error_type="schedule",
                      custom_error_message="expected a number or a schedule"),
        BeforeValidator(expand),
    ]


def schedule_of(value: Any) -> tuple[str, Args] | None:
    """(canonical name, arguments) of a schedule entry; None for a plain value."""
    if not isinstance(value, BaseModel):
        return None
    name = next(iter(type(value).model_fields))
    return SCHEDULES.canonical(name), getattr(value, name)


def is_schedule(learning_rate: Any) -> bool:
    """Whether an optimizer's learning rate changes by itself every step (a `constant` does
    not: it is a number, and callbacks may change it)."""
    found = schedule_of(learning_rate)
    return found is not None and found[0] != "constant"


LearningRate = schedule_type("learning_rate", PositiveFloat)


class OptimizerArgs(Args):
    """`learning_rate` is a number, or a schedule of optimizer steps."""

    positional = "learning_rate"
    learning_rate: LearningRate = 0.001
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    global_clipnorm: PositiveFloat | None = None
    # Keras 3's decoupled decay, on every optimizer: each weight -= lr * weight_decay * weight
    weight_decay: NonNegativeFloat | None = None
    # what Keras's saved optimizer configs hold besides: accepted at its defaults
    name: str | None = keras_only(None)
    loss_scale_factor: float | None = keras_only(None)
    # update every N batches with the mean of their gradients (Keras requires N >= 2)
    gradient_accumulation_steps: Annotated[int, Field(ge=2)] | None = None
    # a moving average of the weights after each step: the weights at the end of training,
    # every N steps with ema_overwrite_frequency, and with swap_ema_weights for validation
    use_ema: bool = False
    ema_momentum: Annotated[float, Field(ge=0, le=1)] = 0.99
    ema_overwrite_frequency: PositiveInt | None = None

    @field_validator("loss_scale_factor")
    @classmethod
    def _not_supported(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError(f"nntrain does not support Keras's {info.field_name}; leave it "
                             "out (Keras's default, null, is accepted)")
        return value

    @model_validator(mode="after")
    def _one_clipping(self, info: ValidationInfo) -> OptimizerArgs:
        given = [k for k in ("clipnorm", "clipvalue", "global_clipnorm")
                 if getattr(self, k) is not None]
        saved = bool((info.context or {}).get("saved"))  # a run an older nntrain trained so
        if len(given) > 1 and not saved:  # Keras refuses: the order they apply in is arbitrary
            raise ValueError(f"give one of clipnorm, clipvalue and global_clipnorm, not "
                             f"{' and '.join(given)}")
        return self


@OPTIMIZERS.register("sgd")
class SGDArgs(OptimizerArgs):
    learning_rate: LearningRate = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False


class AdamFamilyArgs(OptimizerArgs):
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    epsilon: PositiveFloat = 1e-7


@OPTIMIZERS.register("adam")
class AdamArgs(AdamFamilyArgs):
    amsgrad: bool = False


@OPTIMIZERS.register("adamw", "AdamW")
class AdamWArgs(AdamFamilyArgs):
    weight_decay: NonNegativeFloat = 0.004
    amsgrad: bool = False


@OPTIMIZERS.register("nadam")
class NadamArgs(AdamFamilyArgs):
    pass


@OPTIMIZERS.register("rmsprop", "RMSprop")
class RMSpropArgs(OptimizerArgs):
    rho: Annotated[float, Field(ge=0, lt=1)] = 0.9
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    epsilon: PositiveFloat = 1e-7
    centered: bool = False


@OPTIMIZERS.register("adagrad")
class AdagradArgs(OptimizerArgs):
    initial_accumulator_value: NonNegativeFloat = 0.1
    epsilon: PositiveFloat = 1e-7
