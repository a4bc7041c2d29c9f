"""From the config's `data` section to arrays: built-in datasets, .npz/.npy files, splits,
and checks that the arrays fit the model."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.config.schema import DataConfig, SplitConfig
from nntrain.data import fashion_mnist
from nntrain.data.arrays import ArraySet, split_last, split_random
from nntrain.errors import DataError


@dataclass
class Dataset:
    train: ArraySet
    validation: ArraySet | None
    test: ArraySet | None
    class_names: list[str] | None = None

    def split(self, name: str) -> ArraySet:
        found = {"train": self.train, "validation": self.validation, "test": self.test}[name]
        if found is None:
            raise DataError(f"this run's data has no {name} split",
                            f"add data.{name} to the config, or use --split train")
        return found


@dataclass(frozen=True)
class ModelIO:
    """What the data must provide: input shapes/dtypes and output shapes by name."""

    inputs: dict[str, tuple[tuple[int, ...], str]]
    outputs: dict[str, tuple[int, ...]]
    sparse_outputs: frozenset[str] = frozenset()  # outputs whose targets are class indices


def load_dataset(config: DataConfig, io: ModelIO, base_dir: Path, seed: int) -> Dataset:
    """Resolve the data section into train/validation/test arrays, checked against `io`."""
    class_names = None
    test: ArraySet | None = None
    if config.dataset == "synthetic":
        train, test = _synthetic(config, io, seed)
    elif config.dataset is not None:
        splits = fashion_mnist.load(config.dataset)
        train = _named(*splits["train"], io, f"dataset {config.dataset}")
        test = _named(*splits["test"], io, f"dataset {config.dataset}")
        class_names = list(fashion_mnist.DATASETS[config.dataset].class_names)
    else:
        train = _read_file(resolve_path(config.train, base_dir, "data.train"), config, io)

    validation = None
    if config.validation is not None:
        train, validation = _cut(train, config.validation, config, io, base_dir, seed, "validation")
    if config.test is not None:
        train, test = _cut(train, config.test, config, io, base_dir, seed + 1, "test")

    for name, part in (("train", train), ("validation", validation), ("test", test)):
        if part is not None:
            check_arrays(part, io, f"{name} data")
    return Dataset(train, validation, test, class_names)


def resolve_path(path: str, base_dir: Path, key: str) -> Path:
    """A data path from a config: relative paths are relative to the config's folder."""
    resolved = (base_dir / path).expanduser()
    if not resolved.exists():
        raise DataError(f"{key}: file not found: {resolved}",
                        "paths in a config are relative to the config file's folder")
    return resolved


def _cut(data: ArraySet, spec: SplitConfig, config: DataConfig, io: ModelIO, base_dir: Path,
         seed: int, name: str) -> tuple[ArraySet, ArraySet]:
    if spec.path is not None:
        return data, _read_file(resolve_path(spec.path, base_dir, f"data.{name}.path"), config, io)
    if spec.last is not None:
        if spec.last >= len(data):
            raise DataError(
                f"data.{name}.last is {spec.last:,} but only {len(data):,} examples are left",
                f"hold out fewer than {len(data):,} examples",
            )
        return split_last(data, spec.last)
    return split_random(data, spec.fraction, seed)


def _named(x: np.ndarray, y: np.ndarray, io: ModelIO, source: str) -> ArraySet:
    if len(io.inputs) != 1 or len(io.outputs) != 1:
        raise DataError(f"{source} provides one input and one target, "
                        f"but the model has {len(io.inputs)} inputs and {len(io.outputs)} outputs")
    return ArraySet({next(iter(io.inputs)): x}, {next(iter(io.outputs)): y.astype(np.int32)})


def _read_file(path: Path, config: DataConfig, io: ModelIO) -> ArraySet:
    """An .npz with arrays named `x`/`y` (or after the model's inputs and outputs)."""
    try:
        if path.suffix == ".npy":
            raise DataError(f"{path}: a training file needs inputs and targets",
                            "save both with np.savez(path, x=..., y=...)")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {e}",
                        "expected an .npz file from numpy.savez (no pickled objects)") from None
    single = len(io.inputs) == 1 and len(io.outputs) == 1
    x, y = {}, {}
    for name in io.inputs:
        key = config.x if single and config.x in arrays else name
        if key not in arrays:
            raise DataError(f"{path}: no array named '{key}' (found: {', '.join(arrays)})",
                            f"name the input array '{config.x}' or set data.x")
        x[name] = arrays[key]
    for name in io.outputs:
        key = config.y if single and config.y in arrays else name
        if key not in arrays:
            raise DataError(f"{path}: no array named '{key}' (found: {', '.join(arrays)})",
                            f"name the target array '{config.y}' or set data.y")
        y[name] = arrays[key]
    return ArraySet(x, y)


def check_arrays(data: ArraySet, io: ModelIO, what: str, targets: bool = True) -> None:
    """Shapes, dtypes and values the model can take, or one clear error."""
    if len(data) == 0:
        raise DataError(f"{what} is empty", "give at least one example")
    for name, (shape, _dtype) in io.inputs.items():
        array = data.x[name]
        if array.dtype.kind not in "biuf":
            raise DataError(f"{what}: input '{name}' has dtype {array.dtype}; expected numbers")
        if tuple(array.shape[1:]) != shape:
            raise DataError(
                f"{what}: input '{name}' has examples of shape {tuple(array.shape[1:])}, "
                f"the model expects {shape}",
                "change model.input to match the data, or reshape the data",
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise DataError(f"{what}: input '{name}' has {bad:,} NaN or infinite values",
                            "clean or impute the data first")
    if not targets:
        return
    for name, shape in io.outputs.items():
        y = data.y[name]
        if len(y) != len(data):
            raise DataError(f"{what}: {len(y):,} targets for '{name}' but {len(data):,} inputs")
        if name in io.sparse_outputs:
            classes = shape[-1]
            if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
                raise DataError(f"{what}: targets of '{name}' must be class indices (integers)")
            low, high = (y.min(), y.max()) if y.size else (0, 0)
            if low < 0 or high >= classes:
                raise DataError(
                    f"{what}: labels of '{name}' range over {low}..{high}, but the output has "
                    f"{classes} classes (0..{classes - 1})",
                    "set the last layer's units to the number of classes",
                )
        elif y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError(f"{what}: targets of '{name}' contain NaN or infinite values")


def _synthetic(config: DataConfig, io: ModelIO, seed: int) -> tuple[ArraySet, ArraySet | None]:
    """Inputs drawn at random; targets from a fixed random linear teacher, so it is learnable."""
    spec = config.synthetic
    rng = np.random.default_rng(seed)
    total = spec.samples + spec.test_samples
    x = {}
    for name, (shape, _dtype) in io.inputs.items():
        if spec.integer_inputs:
            x[name] = rng.integers(0, 256, size=(total, *shape), dtype=np.uint8)
        else:
            x[name] = rng.standard_normal((total, *shape)).astype(np.float32)
    features = np.concatenate([v.reshape(total, -1).astype(np.float32) for v in x.values()], 1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    y = {}
    for name, shape in io.outputs.items():
        if spec.classes:
            teacher = rng.standard_normal((features.shape[1], spec.classes))
            labels = np.argmax(features @ teacher, axis=1).astype(np.int32)
            y[name] = labels if name in io.sparse_outputs else np.eye(spec.classes)[labels]
        else:
            teacher = rng.standard_normal((features.shape[1], int(np.prod(shape))))
            y[name] = (features @ teacher / np.sqrt(features.shape[1])).astype(np.float32)
            y[name] = y[name].reshape(total, *shape)
    data = ArraySet(x, y)
    if not spec.test_samples:
        return data, None
    return split_last(data, spec.test_samples)
