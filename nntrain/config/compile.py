"""What a user may write in `compile`: losses, metrics and optimizers, Keras's names and
defaults (Keras's epsilon 1e-7, not optax's 1e-8)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from nntrain.config.entries import Args, Registry

LOSSES = Registry("loss")
METRICS = Registry("metric")
OPTIMIZERS = Registry("optimizer")


class CrossentropyArgs(Args):
    from_logits: bool = False


@LOSSES.register("sparse_categorical_crossentropy")
class SparseCategoricalCrossentropyArgs(CrossentropyArgs):
    pass


@LOSSES.register("categorical_crossentropy")
class CategoricalCrossentropyArgs(CrossentropyArgs):
    label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0


@LOSSES.register("binary_crossentropy")
class BinaryCrossentropyArgs(CrossentropyArgs):
    label_smoothing: Annotated[float, Field(ge=0, le=1)] = 0.0


@LOSSES.register("mean_squared_error", "mse")
class MeanSquaredErrorArgs(Args):
    pass


@LOSSES.register("mean_absolute_error", "mae")
class MeanAbsoluteErrorArgs(Args):
    pass


@LOSSES.register("huber")
class HuberArgs(Args):
    positional = "delta"
    delta: PositiveFloat = 1.0


@LOSSES.register("kl_divergence", "kld")
class KLDivergenceArgs(Args):
    pass


@LOSSES.register("cosine_similarity")
class CosineSimilarityArgs(Args):
    pass


class MetricArgs(Args):
    pass


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


class OptimizerArgs(Args):
    positional = "learning_rate"
    learning_rate: PositiveFloat = 0.001
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    global_clipnorm: PositiveFloat | None = None


@OPTIMIZERS.register("sgd")
class SGDArgs(OptimizerArgs):
    learning_rate: PositiveFloat = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False


class AdamFamilyArgs(OptimizerArgs):
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    epsilon: PositiveFloat = 1e-7


@OPTIMIZERS.register("adam")
class AdamArgs(AdamFamilyArgs):
    amsgrad: bool = False


@OPTIMIZERS.register("adamw")
class AdamWArgs(AdamFamilyArgs):
    weight_decay: NonNegativeFloat = 0.004


@OPTIMIZERS.register("nadam")
class NadamArgs(AdamFamilyArgs):
    pass


@OPTIMIZERS.register("rmsprop")
class RMSpropArgs(OptimizerArgs):
    rho: Annotated[float, Field(ge=0, lt=1)] = 0.9
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    epsilon: PositiveFloat = 1e-7
    centered: bool = False


@OPTIMIZERS.register("adagrad")
class AdagradArgs(OptimizerArgs):
    initial_accumulator_value: NonNegativeFloat = 0.1
    epsilon: PositiveFloat = 1e-7
