"""The config file's schema: one pydantic model per section."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    PositiveInt,
    StringConstraints,
    Tag,
    ValidationInfo,
    model_validator,
)

from nntrain.config.callbacks import CALLBACKS
from nntrain.config.compile import LOSSES, METRICS, OPTIMIZERS
from nntrain.config.entries import Strict
from nntrain.config.layers import LAYERS, NodeName, NodeRef
from nntrain.tune.space import SearchConfig

LayerEntry = LAYERS.entry_type()
LossEntry = LOSSES.entry_type()
MetricEntry = METRICS.entry_type()
OptimizerEntry = OPTIMIZERS.entry_type()
CallbackEntry = CALLBACKS.entry_type()

DATASETS = ("fashion_mnist", "mnist", "california_housing", "iris", "xor", "synthetic")
TABULAR_DATASETS = ("california_housing", "iris", "xor")  # read as tables, as .csv files are
# the built-in datasets read from one file, which data.source may give (a local copy)
SOURCE_DATASETS = {"mnist": "Keras's mnist.npz", "california_housing": "handson-ml2's "
                   "housing.csv, or scikit-learn's cal_housing.tgz"}
# columns of a table: "0:5" (an index range, as in Python), a column name, or a list of either
Columns = str | list[str | int]
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
RunName = Annotated[str, Field(pattern=RUN_NAME_PATTERN)]
Shape = Annotated[list[PositiveInt], Field(min_length=1)]
FilePath = Annotated[str, Field(min_length=1)]


def _weight(value: float, info: ValidationInfo) -> float:
    """A loss weight or class weight: a negative one trains the model to make that loss
    worse. (A run an older nntrain trained with one is read back as it was.)"""
    if (info.context or {}).get("saved"):
        return value
    if not 0 <= value <= 1e6:  # NaN too
        raise ValueError("a weight is a number from 0 to 1e6")
    return value


Weight = Annotated[float, AfterValidator(_weight)]


class SplitConfig(Strict):
    """Where a validation or test split comes from: exactly one of the keys."""

    last: PositiveInt | None = None
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    path: FilePath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SplitConfig:
        given = [k for k in ("last", "fraction", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of last, fraction, path")
        return self


class SyntheticConfig(Strict):
    """A learnable random dataset for tests and benchmarks: inputs from the model's input
    shape, targets from a fixed random teacher network."""

    samples: PositiveInt = 256
    test_samples: Annotated[int, Field(ge=0)] = 64
    classes: Annotated[int, Field(ge=0)] = 3
    integer_inputs: bool = False


CODE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # module:function
SIZE_PATTERN = r"(?i)^\s*\d+(\.\d+)?\s*([kmgt]i?b|b)?\s*$"  # 123, 512MB, 1.5 GiB


class DataConfig(Strict):
    dataset: Literal[DATASETS] | None = None  # type: ignore[valid-type]
    source: FilePath | None = None  # a local copy of a built-in dataset's file
    train: FilePath | None = None  # an .npz or .csv file, or a folder of .npy files
    generator: Annotated[str, StringConstraints(pattern=CODE_PATTERN)] | None = None
    x: str = "x"  # .npz: the inputs' array (one input) ...
    y: str = "y"  # ... and the targets' array (one output)
    features: Columns | None = None  # tables: feature columns (default: all but targets)
    targets: str | list[str] | None = None  # tables: target column(s)
    categorical: list[str] = []  # tables: columns to one-hot encode
    missing: Literal["error", "drop", "mean"] = "error"
    inputs: dict[NodeName, Columns] | None = None  # tables: features per model input
    outputs: dict[NodeName, str | list[str]] | None = None  # tables: targets per output
    # a column (tables) or array (.npz) of example weights for every output, or one per
    # output ({output: column}; an output left out is unweighted)
    sample_weight: str | dict[NodeName, str] | None = None
    one_hot: bool = False  # integer labels to one-hot rows (Keras's to_categorical)
    validation: SplitConfig | None = None
    test: SplitConfig | None = None
    limit: PositiveInt | None = None  # train on the first N training examples only
    synthetic: SyntheticConfig = SyntheticConfig()
    # training data over this size streams to the device in chunks (bytes, or "512MB")
    device_memory: Literal["auto"] | PositiveInt | Annotated[
        str, StringConstraints(pattern=SIZE_PATTERN)] = "auto"

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> DataConfig:
        given = [k for k in ("dataset", "train", "generator") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give one of dataset (a built-in name), train (a file or folder) "
                             "or generator (module:function)")
        if self.generator and (self.validation or self.test):
            raise ValueError("with a generator, the function gives the validation and test "
                             "splits itself (called with 'validation', 'test'): drop "
                             "data.validation and data.test")
        table_keys = [k for k in ("features", "targets", "categorical", "inputs", "outputs")
                      if getattr(self, k)] + (["missing"] if self.missing != "error" else [])
        saved = bool((info.context or {}).get("saved"))  # an older nntrain ignored them
        if self.source is not None and self.dataset not in SOURCE_DATASETS and not saved:
            reads = "; ".join(f"{k}: {v}" for k, v in SOURCE_DATASETS.items())
            if self.dataset == "fashion_mnist":
                how = ("fashion_mnist reads its four IDX files from $NNTRAIN_DATA/fashion_mnist/"
                       " or /usr/share/datasets/fashion-mnist/: put them there and drop source")
            elif self.dataset is not None:
                how = f"{self.dataset} is built in and reads no file: drop source"
            else:
                how = "your own file is data.train: drop source"
            raise ValueError(f"source {self.source} would not be read: it is a local copy of "
                             f"a built-in dataset's file ({reads}). {how}")
        suffix = Path(self.train).suffix.lower() if self.train else ""
        if table_keys and suffix not in ("", ".csv", ".npz", ".npy") and not saved:
            raise ValueError(f"train: {self.train} is not a file nntrain reads (a .csv table, "
                             "an .npz of arrays, or a folder of .npy files): convert it, or "
                             "decompress it")
        if table_keys and not self.is_table() and not saved:
            raise ValueError(f"{', '.join(table_keys)}: for tables only (.csv files, the "
                             f"{', '.join(TABULAR_DATASETS)} datasets), and this data is not "
                             "one: drop them (an .npz names its arrays with x and y, or after "
                             "the model's inputs and outputs)")
        return self

    def is_table(self) -> bool:
        """Whether the data is read as a table of named columns."""
        return self.dataset in TABULAR_DATASETS or (
            self.train is not None and Path(self.train).suffix.lower() == ".csv")


class InputConfig(Strict):
    shape: Shape
    dtype: Literal["float32", "int32", "uint8"] = "float32"


class ModelConfig(Strict):
    input: Shape | None = None
    inputs: dict[NodeName, InputConfig] | None = None
    layers: Annotated[list[LayerEntry], Field(min_length=1)]
    outputs: list[NodeRef] | None = None  # (a final state is refused with the fix)

    @model_validator(mode="after")
    def _one_input_form(self) -> ModelConfig:
        if (self.input is None) == (self.inputs is None):
            raise ValueError("give either input (one shape) or inputs (named shapes)")
        return self

    def input_specs(self) -> dict[str, InputConfig]:
        if self.inputs is not None:
            return dict(self.inputs)
        return {"input": InputConfig(shape=self.input)}


def _single_or_per_output(registry):
    def tag(value: Any) -> str:
        if isinstance(value, dict) and not registry.is_serialized(value) and not (
            len(value) == 1 and registry.spelled(next(iter(value))) in registry.names
        ):
            return "per_output"
        return "single"

    return tag


Losses = Annotated[
    Annotated[LossEntry, Tag("single")] | Annotated[dict[NodeName, LossEntry], Tag("per_output")],
    Discriminator(_single_or_per_output(LOSSES)),
]
Metrics = list[MetricEntry] | dict[NodeName, list[MetricEntry]]


class CompileConfig(Strict):
    loss: Losses
    loss_weights: dict[NodeName, Weight] | None = None
    optimizer: OptimizerEntry = "rmsprop"
    metrics: Metrics = []  # as in Keras 3, not weighted by sample or class weights ...
    weighted_metrics: Metrics = []  # ... these are


class FitConfig(Strict):
    epochs: PositiveInt = 1
    # a batch's rows are indexed by int32 on the device
    batch_size: Annotated[int, Field(gt=0, lt=2**31)] = 32
    validation_batch_size: Annotated[int, Field(gt=0, lt=2**31)] | None = None
    shuffle: bool = True
    # by class index, or by class name where the data names its classes (a CSV's text labels)
    class_weight: dict[int | str, Weight] | None = None
    callbacks: list[CallbackEntry] = []
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    devices: PositiveInt | Literal["all"] | None = None  # 1, or all in a multi-process run
    precision: Literal["float32", "bfloat16"] = "float32"
    # float32 products on accelerators: JAX's default is fast (TF32 on NVIDIA GPUs, one
    # bfloat16 pass on TPUs); highest is full float32. None keeps JAX's own setting.
    matmul_precision: Literal["default", "high", "highest"] | None = None


class Config(Strict):
    name: RunName
    description: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # JAX takes a 64-bit signed seed
    data: DataConfig
    model: ModelConfig
    compile: CompileConfig
    fit: FitConfig = FitConfig()
    search: SearchConfig | None = None  # `nntrain tune` only (nntrain/tune/space.py)
