"""From the config's `data` section to arrays: built-in datasets, .npz and CSV files, splits,
and checks that the arrays fit the model."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nntrain.config.schema import DataConfig, SplitConfig
from nntrain.data import builtin, fashion_mnist
from nntrain.data.arrays import (
    ArraySet,
    aligned_empty,
    native_byte_order,
    read_numpy_file,
    unreadable,
)
from nntrain.data.tabular import (
    Table,
    category_values,
    check_finite,
    missing,
    missing_counts,
    number_text,
    one_hot_columns,
    read_csv,
    select,
    stray_text,
)
from nntrain.errors import DataError, DataModelMismatch
from nntrain.fsutil import special_file
from nntrain.metrics import target_problem

IMAGE_DATASETS = ("fashion_mnist", "mnist")


@dataclass
class Dataset:
    train: ArraySet
    validation: ArraySet | None
    test: ArraySet | None
    class_names: dict[str, list[str]] | None = None  # by output: each class index's name
    generator: str | None = None  # the user's batch function the splits come from, if any
    # a table's: how its rows become inputs (features, categories, fill values), recorded in
    # the run so that predicting new rows needs no training file
    encoding: dict[str, Any] | None = None

    def split(self, name: str) -> ArraySet:
        found = {"train": self.train, "validation": self.validation, "test": self.test}[name]
        if found is None and self.generator is not None:
            raise DataError(f"this run's data has no {name} split: {self.generator}('{name}', "
                            "0) returned None", f"return {name} batches from it for split "
                            f"'{name}', or use --split train")
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
    # outputs trained with categorical_crossentropy: the ones data.one_hot converts
    one_hot_outputs: frozenset[str] = frozenset()
    losses: dict[str, str] = field(default_factory=dict)  # by output: the loss's name
    # by output: (compile section, metric name as written)
    metrics: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # by input: (embedding layer, its input_dim) for embeddings the input feeds directly
    embedded: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)


def load_dataset(config: DataConfig, io: ModelIO, base_dir: Path, seed: int,
                 batch_size: int = 32) -> Dataset:
    """Resolve the data section into train/validation/test arrays, checked against `io`."""
    if config.generator:
        return _generated(config, io, base_dir, batch_size)
    source = resolve_path(config.source, base_dir, "data.source") if config.source else None
    train_file = resolve_path(config.train, base_dir, "data.train") if config.train else None
    if config.is_table():
        dataset = _tabular(config, io, base_dir, seed, source, train_file)
    else:
        dataset = _arrays(config, io, base_dir, seed, source, train_file)
    if config.limit is not None and len(dataset.train) > config.limit:
        # after the splits are cut, so validation and test stay the same as without it
        dataset.train = dataset.train.take(slice(0, config.limit))
    if config.one_hot:
        for part in (dataset.train, dataset.validation, dataset.test):
            if part is not None:
                _one_hot(part, io)
    for name in ("train", "validation", "test"):
        part = getattr(dataset, name)
        if part is not None:
            check_arrays(part, io, f"{name} data ({_origin(config, name)})")
    return dataset


def _origin(config: DataConfig, split: str) -> str:
    """Where a split's rows come from, as the config names it."""
    own = getattr(config, split, None) if split != "train" else None
    if own is not None and own.path:
        return own.path
    if config.train or config.source:
        return config.train or config.source
    return f"dataset {config.dataset}"


def _generated(config: DataConfig, io: ModelIO, base_dir: Path, batch_size: int) -> Dataset:
    """Splits from the user's batch function (data/generator.py)."""
    from nntrain.custom import load_object
    from nntrain.data.generator import GeneratorSplit

    fn = load_object(config.generator, [base_dir], what="function")
    if not callable(fn):
        raise DataError(f"data.generator: {config.generator} is not a function")

    def check(batch: ArraySet, what: str) -> None:
        check_arrays(batch, io, what)

    names = (list(io.inputs), list(io.outputs))
    splits = {split: GeneratorSplit.open(fn, config.generator, split, batch_size, check, names)
              for split in ("train", "validation", "test")}
    if splits["train"] is None:
        raise DataError(f"data.generator: {config.generator}('train', 0) returned None",
                        "return the training batches for split 'train'")
    return Dataset(splits["train"], splits["validation"], splits["test"],
                   generator=config.generator)


def resolve_path(path: str, base_dir: Path, key: str) -> Path:
    """A data path from a config: relative paths are relative to the config's folder."""
    resolved = (base_dir / path).expanduser()
    if not resolved.exists():
        raise DataError(f"{key}: file not found: {resolved}",
                        "paths in a config are relative to the config file's folder, "
                        "paths given with --set to the current folder")
    if special_file(resolved):
        raise DataError(f"{key}: {resolved} is a pipe, a device or a socket, not a file",
                        "give a data file (.npz, .npy, .csv) or a folder of .npy files")
    return resolved


# -- splits -----------------------------------------------------------------------------------
def _held_out(n: int, spec: SplitConfig, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, rows held out) for `last: N` (Keras's validation_split: the last rows,
    before shuffling) or `fraction: f` (random, seeded)."""
    if spec.last is not None:
        if spec.last >= n:
            raise DataError(f"data.{name}.last is {spec.last:,}, which leaves none of the "
                            f"{n:,} examples to train on",
                            f"hold out at most {n - 1:,}" if n > 1 else "give more examples")
        # slices, not index arrays: memory-mapped files stay mapped
        return slice(0, n - spec.last), slice(n - spec.last, n)
    held = min(max(1, round(n * spec.fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _cut(rows, config: DataConfig, seed: int, read_file):
    """Test first, then validation from what is left (the textbooks' order). `read_file`
    turns a split's `path` into that split."""
    held: dict[str, object] = {"test": None, "validation": None}
    for offset, name in enumerate(("test", "validation")):
        spec: SplitConfig | None = getattr(config, name)
        if spec is None:
            continue
        if spec.path is not None:
            held[name] = read_file(spec.path, f"data.{name}.path")
        else:
            keep, out = _held_out(len(rows), spec, seed + offset, name)
            rows, held[name] = rows.take(keep), rows.take(out)
    return rows, held["validation"], held["test"]


# -- arrays: images, .npz, synthetic ---------------------------------------------------------
def _arrays(config, io, base_dir, seed, source, train_file) -> Dataset:
    test, class_names = None, None
    if config.dataset == "synthetic":
        train, test = _synthetic(config, io, seed)
    elif config.dataset == "mnist":
        splits = builtin.load_mnist(source)
        train, test = (_named(*splits[k], io, "dataset mnist") for k in ("train", "test"))
        class_names = {out: [str(i) for i in range(10)] for out in io.outputs}
    elif config.dataset in IMAGE_DATASETS:
        splits = fashion_mnist.load(config.dataset)
        train, test = (_named(*splits[k], io, f"dataset {config.dataset}")
                       for k in ("train", "test"))
        class_names = {out: list(fashion_mnist.DATASETS[config.dataset].class_names)
                       for out in io.outputs}
    else:
        train = _read_npz(train_file, config, io)

    def read_file(path, key):
        return _read_npz(resolve_path(path, base_dir, key), config, io, held_out=True)

    train, validation, cut_test = _cut(train, config, seed, read_file)
    return Dataset(train, validation, cut_test if config.test else test, class_names)


def _named(x: np.ndarray, y: np.ndarray, io: ModelIO, source: str) -> ArraySet:
    if len(io.inputs) != 1 or len(io.outputs) != 1:
        raise DataError(f"{source} provides one input and one target, "
                        f"but the model has {len(io.inputs)} inputs and {len(io.outputs)} outputs")
    return ArraySet({next(iter(io.inputs)): x}, {next(iter(io.outputs)): y.astype(np.int32)})


def _read_npz(path: Path, config: DataConfig, io: ModelIO, held_out: bool = False) -> ArraySet:
    """An .npz with arrays named `x`/`y` (or after the model's inputs and outputs). A
    held-out split's file may leave out the sample weights: it is then evaluated unweighted,
    as Keras evaluates data given without them."""
    if path.suffix == ".csv":
        raise DataError(f"{path}: a CSV split needs a CSV training file")
    if not path.is_dir() and not _numpy_file(path):
        raise DataError(f"{path}: not a data file nntrain reads", "give an .npz file "
                        "(numpy.savez), a folder of .npy files, or a .csv file with a header")
    hint = "expected an .npz file from numpy.savez, or a folder of .npy files (no pickled " \
        "objects)"
    arrays = read_npy_folder(path, hint) if path.is_dir() else read_numpy_file(path, hint)
    if isinstance(arrays, np.ndarray):
        raise DataError(f"{path}: a training file needs inputs and targets",
                        "save both with np.savez(path, x=..., y=...), or np.save them "
                        "as x.npy and y.npy in one folder")
    found = ", ".join(arrays)
    if not arrays:
        raise DataError(f"{path}: holds no arrays", "save the data with numpy.savez(path, "
                        "x=..., y=...)")

    rows: dict[str, int] = {}  # rows per array read, for the check below
    label = "{}.npy" if path.is_dir() else "'{}'"  # how the user named each array

    def pick(name: str, setting: str, what: str, single: bool) -> np.ndarray:
        default = getattr(config, setting)
        key = default if single and default in arrays else name
        if key in arrays:  # data.x / data.y, or named after the model's input or output
            if arrays[key].ndim == 0:
                raise DataError(f"{path}: array '{key}' is a single value, not examples",
                                "save one row per example (an array of shape (N, ...))")
            rows[label.format(key)] = len(arrays[key])
            return arrays[key]
        if single:
            raise DataError(f"{path}: no array named '{default}' (data.{setting}) for the "
                            f"model's {what}; found: {found}",
                            f"set data.{setting} to one of {found}")
        raise DataError(f"{path}: no array named '{name}' for the model's {what} '{name}'; "
                        f"found: {found}", f"save one array per model {what}, named after it")

    x = {name: pick(name, "x", "input", len(io.inputs) == 1) for name in io.inputs}
    y = {name: pick(name, "y", "output", len(io.outputs) == 1) for name in io.outputs}
    weight, per_output = None, {}
    if isinstance(config.sample_weight, str):
        if not (held_out and config.sample_weight not in arrays):
            weight = pick(config.sample_weight, "sample_weight", "sample weight", True)
    elif config.sample_weight:
        for out, key in config.sample_weight.items():
            if key in arrays or not held_out:
                per_output[out] = _weight_array(arrays, key, path, out, found)
                rows[label.format(key)] = len(per_output[out])
    if len(set(rows.values())) > 1:  # before any split is cut
        raise DataError(f"{path}: the arrays have different numbers of rows: " + ", ".join(
            f"{name} {n:,}" for name, n in rows.items()), "give one row per example in each")
    return ArraySet(x, y, None if weight is None else _weights(weight, path, "the sample weights"),
                    {out: _weights(v, path, f"output '{out}''s sample weights")
                     for out, v in per_output.items()})


def _weights(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Sample weights as float32, from real numbers only (booleans count as 0 and 1)."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or \
            np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: {what} are {array.dtype} values, not numbers",
                        "save the weights as an array of numbers, one per example")
    return array.astype(np.float32)


def _weight_array(arrays: dict[str, np.ndarray], key: str, path: Path, output: str,
                  found: str) -> np.ndarray:
    if key not in arrays:
        raise DataError(f"{path}: no array named '{key}' (data.sample_weight.{output}) for "
                        f"the weights of output '{output}'; found: {found}",
                        f"set data.sample_weight.{output} to one of {found}")
    if arrays[key].ndim == 0:
        raise DataError(f"{path}: array '{key}' is a single value, not examples",
                        "save one weight per example (an array of shape (N,))")
    return arrays[key]


def _numpy_file(path: Path) -> bool:
    """Whether the file is one numpy wrote, by its first bytes (an .npz is a zip archive),
    whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return True  # let numpy's own reading report it
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"))


def read_npy_folder(folder: Path, hint: str) -> dict[str, np.ndarray]:
    """A folder of .npy files, one per array, memory-mapped: data bigger than memory is read
    as it is used."""
    arrays = {}
    for path in sorted(folder.glob("*.npy")):
        try:
            arrays[path.stem] = native_byte_order(np.load(path, mmap_mode="r",
                                                          allow_pickle=False))
        except (OSError, ValueError, EOFError) as e:
            raise unreadable(path, e, hint) from None
    if not arrays:
        raise DataError(f"{folder}: no .npy files in this folder",
                        "save each array with np.save(folder / 'x.npy', x), likewise y")
    return arrays


def _one_hot(part: ArraySet, io: ModelIO) -> None:
    for name, shape in io.outputs.items():
        if name not in io.one_hot_outputs:
            continue
        y = part.y[name]
        per_example = int(np.prod(shape[:-1]))  # labels per example: a tagger's, one a step
        if (y.ndim > 1 and y.shape[1:] == shape) or y.size != len(y) * per_example:
            continue  # already one-hot, or not labels: the shape check says so
        flat = y.reshape(-1)
        if flat.dtype.kind == "f" and not np.all(np.mod(flat, 1) == 0):
            raise DataError(f"one_hot: labels of '{name}' must be whole class numbers")
        labels = flat.astype(np.int64)
        classes = shape[-1]
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
            raise DataError(f"one_hot: labels of '{name}' range over {labels.min()}.."
                            f"{labels.max()} but the output has {classes} units")
        part.y[name] = np.eye(classes, dtype=np.float32)[labels].reshape(len(y), *shape)


def _synthetic(config: DataConfig, io: ModelIO, seed: int) -> tuple[ArraySet, ArraySet | None]:
    """Inputs drawn at random; targets from a fixed random linear teacher, so it is learnable."""
    spec = config.synthetic
    rng = np.random.default_rng(seed)
    total = spec.samples + spec.test_samples
    x = {}
    for name, (shape, dtype) in io.inputs.items():
        # drawn straight into the array that goes to the device: no float64 or int64 copy
        if spec.integer_inputs or dtype != "float32":
            x[name] = aligned_empty((total, *shape), dtype)
            x[name][...] = rng.integers(0, 256, size=(total, *shape), dtype=np.int32)
        else:
            x[name] = rng.standard_normal(dtype=np.float32,
                                          out=aligned_empty((total, *shape), np.float32))
    parts = [v.reshape(total, -1).astype(np.float32, copy=False) for v in x.values()]
    features = parts[0] if len(parts) == 1 else np.concatenate(parts, 1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    y = {}
    for name, shape in io.outputs.items():
        if spec.classes:
            per_example = int(np.prod(shape[:-1]))  # a label per step for a tagger
            teacher = rng.standard_normal((features.shape[1], per_example * spec.classes),
                                          np.float32)
            logits = (features @ teacher).reshape(total, *shape[:-1], spec.classes)
            y[name] = np.argmax(logits, axis=-1).astype(np.int32)
        else:
            teacher = rng.standard_normal((features.shape[1], int(np.prod(shape))), np.float32)
            y[name] = (features @ teacher / np.sqrt(features.shape[1])).astype(np.float32)
            y[name] = y[name].reshape(total, *shape)
    data = ArraySet(x, y)
    if not spec.test_samples:
        return data, None
    n = spec.samples
    return data.take(slice(0, n)), data.take(slice(n, total))


# -- tables: CSV files, california_housing, iris, xor ----------------------------------------
def _training_table(config, io, base_dir, seed, source, train_file):
    """The training table's plan, its splits (missing rows handled) and the fill values."""
    if config.dataset == "california_housing":
        table = builtin.load_california_housing(source)
    elif config.dataset == "iris":
        table = builtin.load_iris()
    elif config.dataset == "xor":
        table = builtin.load_xor()
    else:
        table = read_csv(train_file, _text_features(config))
    plan = _TablePlan(config, io, table)
    table = plan.handle_missing_rows(table)

    def read_file(path, key):
        resolved = resolve_path(path, base_dir, key)
        if resolved.suffix.lower() != ".csv":
            raise DataError(f"{key}: {resolved} is not a .csv file, and the training data is "
                            "a table", "give the split as a CSV file with the same columns")
        return plan.handle_missing_rows(read_csv(resolved, _text_features(config)))

    train, validation, test = _cut(table, config, seed, read_file)
    return plan, (train, validation, test), plan.fill_values(train)


def table_inputs(config: DataConfig, io: ModelIO, base_dir: Path, seed: int,
                 path: Path, encoding: tuple[Any, str] | None = None) -> ArraySet:
    """New rows of a CSV file (the targets may be left out) as the model's inputs, encoded
    as the run's training data was: the same features, categories and fill values, from
    the run's record of them (`encoding`: the record and where it is), else from reading
    the training data again."""
    if encoding is not None:
        plan, fill = _TablePlan.from_encoding(config, io, *encoding)
    else:
        source = resolve_path(config.source, base_dir, "data.source") if config.source \
            else None
        train_file = resolve_path(config.train, base_dir, "data.train") if config.train \
            else None
        plan, _, fill = _training_table(config, io, base_dir, seed, source, train_file)
    table = read_csv(path, _text_features(config))
    if config.dataset == "california_housing":  # handson-ml2's columns, derived as in training
        table = builtin.housing_features(table)
    check_finite(table, plan.used)
    gaps = missing_counts(table, plan.used)
    if gaps and config.missing != "mean":
        raise DataError(f"{path}: missing values in {_gaps(gaps)}",
                        "give every row a value: each row gets a prediction (data.missing: "
                        "mean in the training config fills them with the training means)")
    return ArraySet(plan.input_arrays(table, fill))


def _tabular(config, io, base_dir, seed, source, train_file) -> Dataset:
    plan, (train, validation, test), fill = _training_table(config, io, base_dir, seed,
                                                           source, train_file)
    parts = [None if t is None else plan.arrays(t, fill) for t in (train, validation, test)]
    class_names = {}  # the text labels of each output's target column
    for out in io.outputs:
        targets = plan.targets_of(out)
        if config.dataset == "iris" and targets == ["species"]:
            class_names[out] = list(builtin.IRIS_CLASSES)
        elif len(targets) == 1 and targets[0] in plan.label_levels:
            class_names[out] = plan.label_levels[targets[0]]
    return Dataset(*parts, class_names=class_names or None, encoding=plan.encoding(fill))


def _default_targets(config: DataConfig) -> list[str]:
    """data.targets, or the built-in table's."""
    targets = config.targets or builtin.TABULAR_TARGETS.get(config.dataset or "")
    return [targets] if isinstance(targets, str) else list(targets or [])


def _any_targets(config: DataConfig) -> set[str]:
    """Every column some output takes as its targets."""
    taken = set(_default_targets(config))
    for spec in (config.outputs or {}).values():
        taken |= {spec} if isinstance(spec, str) else set(spec)
    return taken


def _weight_columns(config: DataConfig) -> list[str]:
    weights = config.sample_weight
    return [weights] if isinstance(weights, str) else sorted(set((weights or {}).values()))


def _text_features(config: DataConfig) -> list[str]:
    """The categorical columns read as text: the features'. A target listed there stays a
    column of numbers (class indices), as it always was."""
    return [c for c in config.categorical if c not in _any_targets(config)]


def _columns_used(inputs: dict[str, list[str]], categories: dict[str, list[str]]) -> list[str]:
    """The table columns the inputs' features come from (a one-hot one's: its category's)."""
    one_hot = {f"{name}={level}": name for name, levels in categories.items()
               for level in levels}
    return sorted({one_hot.get(c, c) for cols in inputs.values() for c in cols})


def target_columns(config: DataConfig, output: str) -> list[str]:
    """A table's target columns for one output: data.outputs' own, else data.targets (or
    the built-in dataset's)."""
    spec = (config.outputs or {}).get(output)
    if spec is None:
        return _default_targets(config)
    return [spec] if isinstance(spec, str) else list(spec)


class _TablePlan:
    """Which columns feed which input and output, decided once from the config and the
    training table, then applied to every split."""

    def __init__(self, config: DataConfig, io: ModelIO, table: Table) -> None:
        self.config, self.io = config, io
        self.default_targets = _default_targets(config)
        if not self.default_targets and config.outputs is None:
            raise DataError(f"{table.source}: which columns are the targets?",
                            "set data.targets (or data.outputs per output)")
        taken = _any_targets(config) | set(_weight_columns(config)) | \
            set(builtin.TABULAR_EXCLUDE.get(config.dataset or "", []))
        for name in sorted(taken | set(config.categorical)):
            if name not in table.names:
                raise DataError(f"{table.source}: no column '{name}'",
                                f"columns: {', '.join(table.names)}")
        base = [n for n in table.names if n not in taken]
        features = select(base, config.features, "data.features") if config.features else base
        unknown = [n for n in features if n in table.text and n not in config.categorical]
        if unknown:
            stray = stray_text(table, unknown[0])
            raise DataError(f"{table.source}: column '{unknown[0]}' holds text{stray}",
                            ("write those cells as numbers (an empty cell is a missing value)"
                             ", or " if stray else "") + "list it under data.categorical to "
                            "one-hot encode it, or leave it out of data.features")
        _, self.categories = one_hot_columns(table, [c for c in config.categorical
                                                     if c in features])
        self.features: list[str] = []  # after one-hot expansion
        for name in features:
            if name in self.categories:
                self.features += [f"{name}={level}" for level in self.categories[name]]
            else:
                self.features.append(name)
        self.inputs = {}
        for name in io.inputs:
            spec = (config.inputs or {}).get(name)
            if spec is None and len(io.inputs) > 1:
                raise DataError(f"the model has inputs {', '.join(io.inputs)}: say which "
                                f"features feed '{name}'", f"e.g. data.inputs: {{{name}: 0:5}}")
            self.inputs[name] = select(self.features, spec, f"data.inputs.{name}")
        self.used = _columns_used(self.inputs, self.categories)
        # text target columns (cat/dog) become class indices in sorted order
        self.label_levels = {c: sorted(set(table.text[c].tolist()) - {""})
                             for c in self._all_targets() if c in table.text}
        for out in io.outputs:
            texts = [c for c in self.targets_of(out) if c in self.label_levels]
            loss = io.losses.get(out)
            if texts and loss and out not in io.sparse_outputs and loss not in (
                    "categorical_crossentropy", "binary_crossentropy"):
                levels = self.label_levels[texts[0]]
                shown = ", ".join(levels[:3]) + (", ..." if len(levels) > 3 else "")
                raise DataError(
                    f"{table.source}: column '{texts[0]}' holds text labels ({shown}), and "
                    f"output '{out}' "
                    f"is trained with {loss}, a loss of values, not classes",
                    f"give '{out}' a numeric target column, or make it a classifier: "
                    "sparse_categorical_crossentropy on a softmax with a unit per class")

    def targets_of(self, output: str) -> list[str]:
        return target_columns(self.config, output)

    def encoding(self, fill: dict[str, float]) -> dict[str, Any]:
        """What `input_arrays` needs, as JSON."""
        return {"inputs": self.inputs, "categories": self.categories, "fill": fill}

    @classmethod
    def from_encoding(cls, config: DataConfig, io: ModelIO, encoding: Any,
                      where: str) -> tuple[_TablePlan, dict[str, float]]:
        """A plan for new rows from a run's recorded encoding (untrusted: checked whole);
        `where` names the record."""
        def names(value: Any, empty: bool = True) -> bool:
            return isinstance(value, list) and (empty or bool(value)) and \
                all(isinstance(v, str) for v in value)

        def number(value: Any) -> bool:
            try:
                return not isinstance(value, bool) and math.isfinite(float(value))
            except (TypeError, ValueError, OverflowError):
                return False

        ok = isinstance(encoding, dict) and isinstance(encoding.get("inputs"), dict) and \
            set(encoding["inputs"]) == set(io.inputs) and \
            all(names(v, empty=False) for v in encoding["inputs"].values()) and \
            isinstance(encoding.get("categories"), dict) and \
            all(names(v) for v in encoding["categories"].values()) and \
            isinstance(encoding.get("fill"), dict) and \
            all(number(v) for v in encoding["fill"].values())
        if not ok:
            raise DataError(f"{where}: the table encoding is damaged",
                            "restore run.json from a backup")
        plan = cls.__new__(cls)
        plan.config, plan.io, plan.label_levels = config, io, {}
        plan.inputs, plan.categories = encoding["inputs"], encoding["categories"]
        plan.used = _columns_used(plan.inputs, plan.categories)
        return plan, {k: float(v) for k, v in encoding["fill"].items()}

    def _numeric(self, table: Table) -> dict[str, np.ndarray]:
        columns = dict(table.numeric)
        for name, levels in self.categories.items():
            if name not in table.numeric and name not in table.text:
                raise DataError(f"{table.source}: column '{name}' is missing",
                                "every split needs the training file's columns")
            values = category_values(table, name)
            unknown = sorted(set(values.tolist()) - set(levels) - {""}, key=str)
            if unknown:  # the model has no input for them
                raise DataError(f"{table.source}: column '{name}' has categories the training "
                                f"data lacks: {', '.join(map(str, unknown[:5]))}",
                                "map them to categories the training data has, or drop those "
                                "rows")
            for level in levels:
                columns[f"{name}={level}"] = (values == level).astype(np.float32)
        return columns

    def handle_missing_rows(self, table: Table) -> Table:
        unfillable = self._all_targets() + [c for c in _weight_columns(self.config)
                                            if c in table.names]
        check_finite(table, self.used + unfillable)
        counts = missing_counts(table, self.used + unfillable)
        if not counts:
            return table
        policy = self.config.missing
        if policy == "error":
            fillable = [c for c in counts if c not in unfillable]
            raise DataError(f"{table.source}: missing values in {_gaps(counts)}",
                            "set data.missing to drop (remove those rows)" + (
                                " or mean (fill with the training mean)" if fillable and
                                len(fillable) == len(counts) else ""))
        if policy == "drop":
            bad = np.zeros(len(table), bool)
            for c in counts:
                bad |= missing(table, c)
            return table.take(np.flatnonzero(~bad))
        target_gaps = [c for c in counts if c in unfillable]
        if target_gaps:
            kinds = {"target" if c in self._all_targets() else "sample weight"
                     for c in target_gaps}
            raise DataError(f"{table.source}: missing {' and '.join(sorted(kinds, reverse=True))}"
                            f" values in {', '.join(target_gaps)}", "set data.missing to drop")
        # "mean": numbers filled per split from the training split's means; a missing
        # category is none of the categories (zeros in its one-hot columns)
        return table

    def _all_targets(self) -> list[str]:
        return sorted({t for out in self.io.outputs for t in self.targets_of(out)})

    def fill_values(self, train: Table) -> dict[str, float]:
        if self.config.missing != "mean":
            return {}
        # every used column: a gap may appear only in validation or test rows
        used = [c for c in self.used if c in train.numeric and c not in self.categories]
        empty = [c for c in used if np.isnan(train.numeric[c]).all()]
        if empty:
            raise DataError(f"{train.source}: column '{empty[0]}' has no values in the "
                            "training rows, so data.missing: mean has no mean to fill it with",
                            "give it values, or leave it out of data.features")
        return {c: float(np.nanmean(train.numeric[c])) for c in used}

    def _columns(self, table: Table, fill: dict[str, float],
                 labels: bool = True) -> dict[str, np.ndarray]:
        """Number columns by name, one-hot categories and (with `labels`) text labels as
        numbers, gaps filled."""
        columns = self._numeric(table)
        for name, levels in self.label_levels.items():  # text labels -> class indices
            if labels and name in table.text:
                index = {level: i for i, level in enumerate(levels)}
                unknown = sorted(set(table.text[name].tolist()) - set(index))
                if unknown:
                    raise DataError(f"{table.source}: column '{name}' has labels the training "
                                    f"data lacks: {', '.join(map(str, unknown[:5]))}")
                columns[name] = np.array([index[v] for v in table.text[name]], np.float32)
            elif labels and name in table.numeric:  # this file's labels all read as numbers
                columns[name] = self._numbers_as_labels(table, name, levels)
        for name, value in fill.items():
            if name in columns:  # a split that lacks the column is reported when used
                columns[name] = np.where(np.isnan(columns[name]), value, columns[name])
        return columns

    @staticmethod
    def _numbers_as_labels(table: Table, name: str, levels: list[str]) -> np.ndarray:
        """Class indices of a label column that reads as numbers in this file, where the
        training file's labels are text (1, 2 and 3+): each number is the label that reads
        as its value, not a class index."""
        by_value: dict[float, list[int]] = {}
        for i, level in enumerate(levels):
            with contextlib.suppress(ValueError):
                by_value.setdefault(float(np.float32(level)), []).append(i)
        values = table.numeric[name]
        found = {v: by_value.get(v, []) for v in map(float, np.unique(values[~np.isnan(values)]))}
        unknown = [number_text(v) for v, i in found.items() if not i]
        if unknown:
            raise DataError(f"{table.source}: column '{name}' has labels the training data "
                            f"lacks: {', '.join(unknown[:5])}")
        twice = next(([levels[j] for j in i] for i in found.values() if len(i) > 1), None)
        if twice:
            raise DataError(f"{table.source}: column '{name}' holds numbers, and the training "
                            f"data writes one of them as {' and as '.join(twice)}",
                            "write each label the same way in every file")
        index = {v: i[0] for v, i in found.items()}
        return np.array([math.nan if np.isnan(v) else index[float(v)] for v in values],
                        np.float32)

    @staticmethod
    def _column(table: Table, columns: dict[str, np.ndarray], name: str) -> np.ndarray:
        if name not in columns:
            kind = f"holds text{stray_text(table, name)}" if name in table.text \
                else "is missing"
            raise DataError(f"{table.source}: column '{name}' {kind}",
                            "every split needs the training file's numeric columns")
        return columns[name]

    def input_arrays(self, table: Table, fill: dict[str, float],
                     columns: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The model's inputs from a table's feature columns (new rows to predict: their
        target columns, if any, are not read)."""
        columns = self._columns(table, fill, labels=False) if columns is None else columns
        return {name: np.stack([self._column(table, columns, c) for c in cols],
                               axis=1).astype(np.float32)
                for name, cols in self.inputs.items()}

    def arrays(self, table: Table, fill: dict[str, float]) -> ArraySet:
        columns = self._columns(table, fill)

        def column(name: str) -> np.ndarray:
            return self._column(table, columns, name)

        x = self.input_arrays(table, fill, columns)
        y = {}
        for out, shape in self.io.outputs.items():
            cols = self.targets_of(out)
            values = np.stack([column(c) for c in cols], axis=1)
            if out in self.io.sparse_outputs and len(cols) > 1:
                raise DataError(f"{table.source}: data.targets gives output '{out}' "
                                f"{len(cols)} columns ({', '.join(cols)}), and its loss takes "
                                "one column of class indices",
                                "give it one target column, or give each column its own "
                                "output")
            if out in self.io.sparse_outputs or (
                    self.config.one_hot and out in self.io.one_hot_outputs and len(cols) == 1):
                labels = values[:, 0]
                if not np.all(np.mod(labels[np.isfinite(labels)], 1) == 0):
                    raise DataError(f"{table.source}: labels in '{cols[0]}' must be class "
                                    "indices (whole numbers)")
                y[out] = labels.astype(np.int32)
            else:
                y[out] = values.reshape(len(values), *shape) if values.size == \
                    len(values) * int(np.prod(shape)) else values
        def weights(name: str) -> np.ndarray | None:
            # only a held-out file can lack the column (the training table was checked):
            # it is evaluated unweighted, as an .npz without the array is
            return column(name) if name in columns or name in table.text else None

        setting = self.config.sample_weight
        if isinstance(setting, dict):
            own = {out: weights(name) for out, name in setting.items()}
            return ArraySet(x, y, None, {out: w for out, w in own.items() if w is not None})
        return ArraySet(x, y, weights(setting) if setting else None)


def _gaps(counts: dict[str, int]) -> str:
    """Missing values by column, as messages list them: `age (17 rows), city (1 row)`."""
    return ", ".join(f"{c} ({n:,} row{'' if n == 1 else 's'})" for c, n in counts.items())


def _labels_hint(name: str, io: ModelIO) -> str:
    """What to change when class indices meet an output of class scores."""
    if io.losses.get(name) == "categorical_crossentropy":
        return "for class indices with categorical_crossentropy set data.one_hot: true, or " \
            "use sparse_categorical_crossentropy"
    return "class indices need sparse_categorical_crossentropy on a softmax output (for a " \
        "yes/no target: one sigmoid unit with binary_crossentropy)"


def _blocks(array: np.ndarray, size: int = 64 << 20):
    """Row blocks of about `size` bytes: a check over a memory-mapped file never holds all of
    it in memory, however wide its rows."""
    rows = max(1, size // max(1, array[:1].nbytes))
    return (array[i:i + rows] for i in range(0, len(array), rows))


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite(block: np.ndarray) -> np.ndarray:
    """Finite as the model reads it, in float32: a float64 past ±3.4e38 becomes infinite.
    (NaN and the infinities compare false; the temporaries are booleans.)"""
    if block.dtype.itemsize <= 4:
        return np.isfinite(block)
    finite = block <= FLOAT32_MAX
    finite &= block >= -FLOAT32_MAX
    return finite


def _count_not_finite(array: np.ndarray) -> int:
    return sum(int(np.size(b) - _finite(b).sum()) for b in _blocks(array))


def _shape_hint(given: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """How to fix inputs for a trained model, whose shape is settled: the array's."""
    if tuple(given) == expected:
        return f"one example needs a batch axis: save it as shape {(1, *expected)} " \
            "(np.expand_dims(x, 0))"
    if len(given) > 1 and int(np.prod(given[1:])) == int(np.prod(expected)):
        # the same values per example, laid out otherwise (flattened images)
        shape = ", ".join(str(d) for d in expected)
        return f"reshape the array to (N, {shape}): x.reshape(-1, {shape})"
    return f"give an array of shape (N, {', '.join(str(d) for d in expected)})"


def check_arrays(data: ArraySet, io: ModelIO, what: str, targets: bool = True) -> None:
    """Shapes, dtypes and values the model can take, or one clear error."""
    if len(data) == 0:
        raise DataError(f"{what} is empty", "give at least one example")
    rows = {name: len(array) for name, array in data.x.items()}
    if len(set(rows.values())) > 1:
        raise DataError(f"{what}: the inputs have different numbers of rows: " + ", ".join(
            f"'{name}' {n:,}" for name, n in rows.items()), "give one row per example in each")
    for name, (shape, _dtype) in io.inputs.items():
        array = data.x[name]
        if array.dtype.kind not in "biuf":
            raise DataError(f"{what}: input '{name}' has dtype {array.dtype}; expected numbers",
                            "store the inputs as integer or float arrays")
        if tuple(array.shape[1:]) != shape:
            raise DataModelMismatch(
                f"{what}: input '{name}' has examples of shape {tuple(array.shape[1:])}, "
                f"the model expects {shape}",
                _shape_hint(array.shape, shape) if not targets else
                "change the model's input shape to match the data, or reshape the data",
            )
        if array.dtype.kind == "f" and (bad := _count_not_finite(array)):
            raise DataError(f"{what}: input '{name}' has {bad:,} NaN or infinite values "
                            "(or past float32's ±3.4e38)",
                            "clean the data, or set data.missing for CSV files" if targets
                            else "give every value: the model has no use for a missing one "
                            "(a .csv of new rows is filled as the training data was)")
        if io.embedded.get(name) and array.dtype.kind == "f" and \
                not all(np.all(np.mod(b, 1) == 0) for b in _blocks(array)):
            layer = io.embedded[name][0][0]
            raise DataError(f"{what}: input '{name}' holds numbers with fractions, and the "
                            f"embedding '{layer}' takes whole-number ids",
                            "give the ids as integers (they would be cut to whole numbers)")
        for layer, rows in io.embedded.get(name, ()):
            # an index past the table would be clamped to its last row without a word
            low = min(int(np.floor(b.min())) for b in _blocks(array)) if array.size else 0
            high = max(int(np.floor(b.max())) for b in _blocks(array)) if array.size else 0
            if low < 0 or high >= rows:
                raise DataModelMismatch(
                    f"{what}: input '{name}' holds indices {low}..{high}, but the embedding "
                    f"'{layer}' has input_dim {rows} (0..{rows - 1})",
                    f"set input_dim to at least {high + 1}, or map the values to "
                    "0..input_dim-1" if targets else f"the trained model knows ids "
                    f"0..{rows - 1}: map the others as its training data did (to an "
                    "out-of-vocabulary id, say)")
    if not targets:
        return
    for name, weight in data.weights().items():
        which = "sample weights" if name == "sample_weight" else \
            f"sample weights of output '{name.split(':', 1)[1]}'"
        if weight.ndim != 1:
            raise DataError(f"{what}: {which} of shape {weight.shape}: give one number per "
                            "example (weights per step of a sequence are not supported)")
        if len(weight) != len(data) or not np.isfinite(weight).all():
            raise DataError(f"{what}: {which} must be one finite number per example")
        if (weight < 0).any():  # it would train the model to make those examples worse
            raise DataError(f"{what}: {which} hold {int((weight < 0).sum()):,} negative "
                            f"values (the first {float(weight[weight < 0][0]):g})",
                            "give weights of 0 or more (0 leaves an example out)")
    for name, shape in io.outputs.items():
        y = data.y[name]
        if len(y) != len(data):
            raise DataError(f"{what}: {len(y):,} targets for '{name}' but {len(data):,} inputs",
                            "give one target per example")
        if y.dtype.kind not in "biuf":
            raise DataError(f"{what}: targets of '{name}' have dtype {y.dtype}; expected numbers",
                            "store class indices or values (text labels become classes only "
                            "in CSV files)")
        if y.dtype.kind == "f" and (bad := _count_not_finite(y)):
            raise DataError(f"{what}: targets of '{name}' hold {bad:,} NaN or infinite "
                            "values (or past float32's ±3.4e38)",
                            "give every example a finite target, or leave the example out "
                            "(for a CSV, data.missing: drop does)")
        if name in io.sparse_outputs:
            classes = shape[-1]
            if int(np.prod(y.shape[1:])) != int(np.prod(shape[:-1])):
                one_hot = tuple(y.shape[1:]) == (*shape[:-1], classes)
                per_step = y.ndim > 1 and int(np.prod(shape[:-1])) == 1
                raise DataError(
                    f"{what}: targets of '{name}' have shape {tuple(y.shape[1:])} per example; "
                    f"the loss takes class indices, {int(np.prod(shape[:-1]))} per example",
                    "for one-hot targets use categorical_crossentropy (and no data.one_hot)"
                    if one_hot else "a label per step needs an output per step: "
                    "return_sequences: true on the recurrent layer before it" if per_step
                    else "give one class index per prediction of the output")
            fractions = y[np.mod(y, 1) != 0] if y.dtype.kind == "f" else ()
            if len(fractions):
                raise DataError(f"{what}: targets of '{name}' must be class indices "
                                f"(integers), found {fractions[0]:g}",
                                "its loss takes class indices 0, 1, ...; for values use a "
                                "regression loss such as mse")
            low, high = (y.min(), y.max()) if y.size else (0, 0)
            if low < 0 or high >= classes:
                per_step = len(shape) > 1  # a label per step: a tagger's padded steps too
                raise DataModelMismatch(
                    f"{what}: labels of '{name}' range over {low}..{high}, but the output has "
                    f"{classes} classes (0..{classes - 1})",
                    "set the last layer's units to the number of classes"
                    + ("; padded steps need a label in that range too (0, say), though the "
                       "loss leaves them out" if per_step else ""),
                )
        else:
            if int(np.prod(y.shape[1:])) != int(np.prod(shape)):
                # one class index per prediction, where the output gives class scores
                labels = shape[-1] > 1 and tuple(y.shape[1:]) in (shape[:-1], (*shape[:-1], 1))
                per_step = len(shape) > 1 and int(np.prod(y.shape[1:])) == shape[-1]
                raise DataError(
                    f"{what}: targets of '{name}' have shape {tuple(y.shape[1:])} per example, "
                    f"the output has {shape}",
                    _labels_hint(name, io) if labels else
                    "the output gives a value per step; for one per sequence set "
                    "return_sequences: false on the last recurrent layer" if per_step else
                    "give targets of the output's shape, or change the last layer's units")
            if io.losses.get(name) == "binary_crossentropy" and y.size:
                low = min(float(b.min()) for b in _blocks(y))
                high = max(float(b.max()) for b in _blocks(y))
                if low < 0 or high > 1:
                    raise DataError(
                        f"{what}: targets of '{name}' range over {low:g}..{high:g}, and "
                        "binary_crossentropy takes targets in 0..1 (class 0 or 1, or a "
                        "probability)",
                        "scale the targets to 0..1 (uint8 pixels: save them divided by 255), "
                        "or train class indices with sparse_categorical_crossentropy, values "
                        "with mse")
        for section, metric in io.metrics.get(name, ()):
            problem = target_problem(metric, tuple(y.shape[1:]), tuple(shape))
            if problem is not None:
                raise DataError(
                    f"{what}: metric {metric} of '{name}' needs {problem[0]}; the targets have "
                    f"shape {tuple(y.shape[1:])} per example (compile.{section})", problem[1])
