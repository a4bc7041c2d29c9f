"""Model outputs for new inputs, and the ways to show or save them."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from rich.table import Table

from nntrain.build import Setup
from nntrain.data.arrays import ArraySet
from nntrain.errors import UserError
from nntrain.fsutil import atomic_write_bytes, atomic_write_text

PREDICT_BATCH = 1024


def predict_arrays(setup: Setup, weights: dict[str, Any], data: ArraySet,
                   step_masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Outputs for every row, in fixed-size batches (the last one padded) so one program
    serves any number of rows. A dict given as `step_masks` receives, for each output with
    a mask over its steps (a tagger after `mask_zero`), which steps are real."""
    model = setup.model
    squash = {name: kind for name in model.output_names
              if (kind := probabilities_of(setup, name)) != model.output_activation(name)}

    @jax.jit
    def run(params, state, xb):  # weights as arguments: not constants baked into the program
        masks: dict[str, jax.Array] = {}
        outputs, _, _ = model.apply(params, state, xb, training=False, output_masks=masks)
        # an output trained on logits (from_logits: true) is shown as probabilities
        return {name: getattr(jax.nn, squash[name])(value) if name in squash else value
                for name, value in outputs.items()}, masks

    n = len(data)
    batch = min(PREDICT_BATCH, n)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    mask_parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        rows = np.arange(start, start + batch).clip(max=n - 1)
        outputs, masks = run(weights["params"], weights["state"],
                             {k: v[rows] for k, v in data.x.items()})
        for name, value in outputs.items():
            parts[name].append(np.asarray(value)[: min(batch, n - start)])
        for name, value in masks.items():
            mask_parts.setdefault(name, []).append(
                np.asarray(value, bool)[: min(batch, n - start)])
    if step_masks is not None:
        step_masks.update({name: np.concatenate(c) for name, c in mask_parts.items()})
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def probabilities_of(setup: Setup, name: str) -> str | None:
    """How an output's values are probabilities: "softmax" or "sigmoid" when it ends in one,
    or when its loss takes its values as logits (`from_logits: true`); else None."""
    activation = setup.model.output_activation(name)
    if activation in ("softmax", "sigmoid"):
        return activation
    loss = setup.losses[name]
    if loss.takes_logits:
        return "sigmoid" if loss.name == "binary_crossentropy" else "softmax"
    return None


def _is_classifier(setup, name: str, values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] > 1 and (
        probabilities_of(setup, name) == "softmax" or name in setup.io.sparse_outputs)


def _is_tagger(setup, name: str, values: np.ndarray) -> bool:
    """Class probabilities for each step of a sequence: (examples, steps, classes)."""
    return values.ndim == 3 and values.shape[2] > 1 and (
        probabilities_of(setup, name) == "softmax" or name in setup.io.sparse_outputs)


def _step_classes(targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A tagger's true class per step, from labels or one-hot rows: (examples, steps)."""
    targets = np.asarray(targets)
    if targets.ndim == values.ndim:  # one-hot
        targets = np.argmax(targets, axis=-1)
    return targets.reshape(len(values), -1)


def _is_binary(setup, name: str, values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] == 1 and \
        probabilities_of(setup, name) == "sigmoid"


ClassNames = dict[str, list[str]]  # by output: the name of each class index


def _label(index: int, names: list[str] | None) -> str:
    return names[index] if names and index < len(names) else str(index)


def prediction_table(outputs: dict[str, np.ndarray], class_names: ClassNames | None, top: int,
                     targets: dict[str, np.ndarray] | None, setup,
                     step_masks: dict[str, np.ndarray] | None = None) -> Table:
    """One row per example. With `top` over 1, a column per rank holds the class and its
    probability together, so the table stays readable at 80 columns; cells wrap, never cut."""
    table = Table(header_style="bold")

    def column(header: str, right: bool = False) -> None:
        table.add_column(header, justify="right" if right else "left", overflow="fold")

    column("index", right=True)
    columns: list[tuple[str, np.ndarray, bool, bool, bool, int, list[str] | None]] = []
    for name, values in outputs.items():
        prefix = f"{name} " if len(outputs) > 1 else ""
        classifier = _is_classifier(setup, name, values)
        binary = _is_binary(setup, name, values)
        tagger = _is_tagger(setup, name, values)
        ranks = min(top, values.shape[-1])  # no more ranks than classes
        names = (class_names or {}).get(name)
        columns.append((name, values, classifier, binary, tagger, ranks, names))
        if tagger:
            column(f"{prefix}class per step")
        elif binary:
            column(f"{prefix}class")
            column(f"{prefix}probability of {_label(1, names)}", right=True)
        elif classifier and ranks == 1:
            column(f"{prefix}class")
            column(f"{prefix}probability", right=True)
        elif classifier:
            for rank in range(ranks):
                column(f"{prefix}#{rank + 1} (probability)")
        else:
            column(f"{prefix}prediction", right=True)
        if targets is not None and name in targets:
            column(f"{prefix}true")
    if top > 1 and not any(column[2] and not column[3] for column in columns):
        one = "one sigmoid probability, whose class the table shows" if any(
            column[3] for column in columns) else "a class per step of a sequence" if any(
            column[4] for column in columns) else "not class probabilities"
        raise UserError(f"--top {top} ranks the classes of a softmax output; this model's "
                        f"output is {one}", "drop --top")
    for row in range(len(next(iter(outputs.values())))):
        cells = [str(row)]
        for name, values, classifier, binary, tagger, ranks, names in columns:
            real = (step_masks or {}).get(name)
            real = None if real is None else real[row]
            if tagger:
                cells.append(_steps(np.argmax(values[row], axis=-1), real, names))
            elif binary:
                cells += [_label(int(values[row, 0] > 0.5), names),
                          f"{values[row, 0]:.4f}"]
            elif classifier:
                best = np.argsort(-values[row])[:ranks]
                if ranks == 1:
                    cells += [_label(int(best[0]), names), f"{values[row, best[0]]:.4f}"]
                else:
                    cells += [f"{_label(int(c), names)} ({values[row, c]:.3f})"
                              for c in best]
            else:
                cells.append(" ".join(f"{v:.4f}" for v in np.ravel(values[row])))
            if targets is not None and name in targets and tagger:
                cells.append(_steps(_step_classes(targets[name][row:row + 1],
                                                  values[row:row + 1])[0], real, names))
            elif targets is not None and name in targets:
                true = targets[name][row]
                if (classifier or binary) and np.size(true) == 1:
                    cells.append(_label(_true_class(np.ravel(true)[0]), names))
                elif classifier and np.size(true) == values.shape[-1]:  # a one-hot row
                    cells.append(_label(int(np.argmax(true)), names))
                else:
                    cells.append(" ".join(f"{v:.4g}" for v in np.ravel(true)))
        table.add_row(*cells)
    return table


def _steps(classes: np.ndarray, real: np.ndarray | None, names: list[str] | None) -> str:
    """A class per step; a padded step (masked out of the loss and metrics) as '·'."""
    return " ".join("·" if real is not None and not real[t] else _label(int(c), names)
                    for t, c in enumerate(classes))


def _true_class(target: float) -> int:
    """A target's class: soft binary targets (0.8) round, as class_weight reads them."""
    return int(np.round(target))


def write_predictions(path: Path, outputs: dict[str, np.ndarray],
                      class_names: ClassNames | None, setup,
                      targets: dict[str, np.ndarray] | None = None,
                      step_masks: dict[str, np.ndarray] | None = None,
                      value_names: dict[str, list[str]] | None = None) -> None:
    """`.npy`: the raw output (one output); `.npz`: one array per output; `.csv`/`.json`: one
    row per example with the predicted class, its name and probability, then every column,
    then (predicting a split) the true class and its name, or the true values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # as --show and plot --output do
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        buffer = io.BytesIO()
        if suffix == ".npy":
            np.save(buffer, next(iter(outputs.values())), allow_pickle=False)
        else:  # np.savez's layout; its keyword arguments would refuse an output named `file`
            with zipfile.ZipFile(buffer, "w") as archive:
                for name, values in outputs.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(values),
                                                  allow_pickle=False)
        atomic_write_bytes(path, buffer.getvalue())
        return
    rows: list[dict] = [{"index": i} for i in range(len(next(iter(outputs.values()))))]
    for name, values in outputs.items():
        prefix = f"{name}_" if len(outputs) > 1 else ""
        names = (class_names or {}).get(name)
        classifier = _is_classifier(setup, name, values)
        if _is_tagger(setup, name, values):  # a class per step; the probabilities: .npy
            # a padded step (masked out of the loss and metrics) has no class: empty, null
            real = (step_masks or {}).get(name, np.ones(values.shape[:2], bool))
            for row, classes, kept in zip(rows, np.argmax(values, axis=-1), real, strict=True):
                row.update({f"{prefix}class_{t}": int(c) if kept[t] else None
                            for t, c in enumerate(classes)})
            if targets is not None and name in targets:
                for row, true, kept in zip(rows, _step_classes(targets[name], values), real,
                                           strict=True):
                    row.update({f"{prefix}true_class_{t}": int(c) if kept[t] else None
                                for t, c in enumerate(true)})
            continue
        flat = values.reshape(len(values), -1)
        # several values: named after their target columns (a table's), else numbered
        columns = (value_names or {}).get(name) or []
        columns = columns if len(columns) == flat.shape[1] else list(range(flat.shape[1]))
        if _is_binary(setup, name, values):  # one sigmoid unit: the probability of class 1
            flat = np.concatenate([1 - flat, flat], axis=1)
            classifier = True
        for i, row in enumerate(rows):
            if classifier:
                cls = int(np.argmax(flat[i]))
                row[f"{prefix}class"] = cls
                row[f"{prefix}label"] = _label(cls, names)
                row[f"{prefix}probability"] = float(flat[i, cls])
                for j, p in enumerate(flat[i]):
                    row[f"{prefix}p_{_label(j, names)}"] = float(p)
            else:
                base = name if len(outputs) > 1 else "prediction"
                for j, v in enumerate(flat[i]):
                    row[f"{base}_{columns[j]}" if flat.shape[1] > 1 else base] = float(v)
        if targets is not None and name in targets:
            true = targets[name].reshape(len(values), -1)
            for i, row in enumerate(rows):
                if classifier and true.shape[1] == 1:
                    row[f"{prefix}true_class"] = _true_class(true[i, 0])
                    row[f"{prefix}true_label"] = _label(_true_class(true[i, 0]), names)
                elif classifier:  # one-hot targets
                    row[f"{prefix}true_class"] = int(np.argmax(true[i]))
                    row[f"{prefix}true_label"] = _label(int(np.argmax(true[i])), names)
                else:
                    for j, v in enumerate(true[i]):
                        row[f"{prefix}true_{columns[j]}" if true.shape[1] > 1
                            else f"{prefix}true"] = float(v)
    if suffix == ".json":
        # strict JSON: a NaN or infinite prediction is null
        rows = [{k: v if not isinstance(v, float) or math.isfinite(v) else None
                 for k, v in row.items()} for row in rows]
        atomic_write_text(path, json.dumps(rows, indent=1, allow_nan=False) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def image_shape_problem(setup: Setup) -> str | None:
    """Why `predict --show` cannot draw this model's inputs as images, or None when it can:
    one input of shape (height, width) or (height, width, 1 or 3 channels)."""
    inputs = setup.io.inputs
    if len(inputs) != 1:
        return f"the model has {len(inputs)} inputs ({', '.join(inputs)}), not one image"
    name, (shape, _dtype) = next(iter(inputs.items()))
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3)):
        return None
    return (f"the model's input '{name}' has shape {tuple(shape)}, not an image "
            "(height, width) or (height, width, 1 or 3 channels)")


def _displayable(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """An image for imshow, and its arguments: pixels that look like 0-255 are drawn on that
    scale; anything else is scaled to [0, 1]. One channel is drawn dark on light, as the
    textbook shows Fashion-MNIST."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 255 and (np.issubdtype(image.dtype, np.integer) or high > 1.0):
        scaled, vmax = image.astype(np.float32) / 255.0, 1.0
    else:
        scaled, vmax = (image.astype(np.float32) - low) / (high - low or 1.0), 1.0
    if scaled.ndim == 2:
        return scaled, {"cmap": "binary", "vmin": 0.0, "vmax": vmax}
    return np.clip(scaled, 0.0, 1.0), {}


def plot_image_grid(path: Path, images: np.ndarray, predicted: list[str],
                    true: list[str] | None, title: str = "") -> tuple[int, int]:
    """The images in a grid, each titled with its predicted class, and the true one below it
    when they differ (in red). Returns (wrong, shown)."""
    from matplotlib.figure import Figure

    n = len(images)
    columns = min(n, 10)
    rows = math.ceil(n / columns)
    # a cell: the image, and above it two lines of title (the predicted and the true class)
    cell_w, cell_h, title_h = 1.45, 1.85, (0.35 if title else 0.0)
    height = cell_h * rows + title_h
    fig = Figure(figsize=(max(cell_w * columns, 3.0), height), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    wrong = 0
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        image, kwargs = _displayable(images[i])
        ax.imshow(image, interpolation="nearest", **kwargs)
        if true is None:
            ax.set_title(predicted[i], fontsize=8)
        elif predicted[i] == true[i]:
            ax.set_title(predicted[i], fontsize=8, color="black")
        else:
            wrong += 1
            ax.set_title(f"{predicted[i]}\n(true: {true[i]})", fontsize=8, color="red")
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png")
    atomic_write_bytes(path, buffer.getvalue())
    return wrong, n


def show_labels(setup: Setup, outputs: dict[str, np.ndarray], targets: dict[str, np.ndarray] | None,
                class_names: ClassNames | None) -> tuple[str, list[str], list[str] | None]:
    """(output name, predicted labels, true labels or None) for the first classifier output."""
    for name, values in outputs.items():
        names = (class_names or {}).get(name)
        if _is_binary(setup, name, values):
            predicted = [_label(int(v > 0.5), names) for v in values[:, 0]]
        elif _is_classifier(setup, name, values):
            predicted = [_label(int(i), names) for i in np.argmax(values, axis=1)]
        else:
            continue
        true = None
        if targets is not None and name in targets:
            y = np.asarray(targets[name])
            if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows
                y = np.argmax(y, axis=1)
            true = [_label(int(np.ravel(v)[0]), names) for v in y]
        return name, predicted, true
    return "", [], None
