"""Model outputs for new inputs, and the ways to show or save them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jax
import numpy as np
from rich.table import Table

from nntrain.data.arrays import ArraySet
from nntrain.fsutil import atomic_write_bytes, atomic_write_text

PREDICT_BATCH = 1024


def predict_arrays(setup, weights, data: ArraySet) -> dict[str, np.ndarray]:
    """Outputs for every row, in fixed-size batches (the last one padded) so one program
    serves any number of rows."""
    model = setup.model

    @jax.jit
    def run(xb):
        outputs, _, _ = model.apply(weights["params"], weights["state"], xb, training=False)
        return outputs

    n = len(data)
    batch = min(PREDICT_BATCH, n)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    for start in range(0, n, batch):
        rows = np.arange(start, start + batch).clip(max=n - 1)
        outputs = run({k: v[rows] for k, v in data.x.items()})
        for name, value in outputs.items():
            parts[name].append(np.asarray(value)[: min(batch, n - start)])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _is_classifier(setup, name: str, values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] > 1 and (
        setup.model.output_activation(name) == "softmax" or name in setup.io.sparse_outputs)


def _is_binary(setup, name: str, values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] == 1 and \
        setup.model.output_activation(name) == "sigmoid"


def _label(index: int, class_names: list[str] | None) -> str:
    return class_names[index] if class_names and index < len(class_names) else str(index)


def prediction_table(outputs: dict[str, np.ndarray], class_names: list[str] | None, top: int,
                     targets: dict[str, np.ndarray] | None, setup) -> Table:
    table = Table(header_style="bold")
    table.add_column("index", justify="right")
    columns: list[tuple[str, np.ndarray, bool]] = []
    for name, values in outputs.items():
        prefix = f"{name} " if len(outputs) > 1 else ""
        classifier = _is_classifier(setup, name, values)
        binary = _is_binary(setup, name, values)
        columns.append((name, values, classifier, binary))
        if binary:
            table.add_column(f"{prefix}class")
            table.add_column(f"{prefix}probability of 1", justify="right")
        elif classifier:
            for rank in range(top):
                suffix = "" if top == 1 else f" #{rank + 1}"
                table.add_column(f"{prefix}class{suffix}")
                table.add_column(f"{prefix}probability{suffix}", justify="right")
        else:
            table.add_column(f"{prefix}prediction", justify="right")
        if targets is not None and name in targets:
            table.add_column(f"{prefix}true")
    for row in range(len(next(iter(outputs.values())))):
        cells = [str(row)]
        for name, values, classifier, binary in columns:
            if binary:
                cells += [str(int(values[row, 0] > 0.5)), f"{values[row, 0]:.4f}"]
            elif classifier:
                for cls in np.argsort(-values[row])[:top]:
                    cells += [_label(int(cls), class_names), f"{values[row, cls]:.4f}"]
            else:
                cells.append(" ".join(f"{v:.4f}" for v in np.ravel(values[row])))
            if targets is not None and name in targets:
                true = targets[name][row]
                if classifier and np.ndim(true) == 0:
                    cells.append(_label(int(true), class_names))
                else:
                    cells.append(" ".join(f"{v:.4g}" for v in np.ravel(true)))
        table.add_row(*cells)
    return table


def write_predictions(path: Path, outputs: dict[str, np.ndarray],
                      class_names: list[str] | None, setup) -> None:
    """`.npy`: the raw output (one output); `.npz`: one array per output; `.csv`/`.json`: one
    row per example with the predicted class, its name and probability, then every column."""
    path = Path(path)
    if path.suffix in (".npy", ".npz"):
        buffer = io.BytesIO()
        if path.suffix == ".npy":
            np.save(buffer, next(iter(outputs.values())), allow_pickle=False)
        else:
            np.savez(buffer, **outputs)
        atomic_write_bytes(path, buffer.getvalue())
        return
    rows: list[dict] = [{"index": i} for i in range(len(next(iter(outputs.values()))))]
    for name, values in outputs.items():
        prefix = f"{name}_" if len(outputs) > 1 else ""
        classifier = _is_classifier(setup, name, values)
        flat = values.reshape(len(values), -1)
        for i, row in enumerate(rows):
            if classifier:
                cls = int(np.argmax(flat[i]))
                row[f"{prefix}class"] = cls
                row[f"{prefix}label"] = _label(cls, class_names)
                row[f"{prefix}probability"] = float(flat[i, cls])
                for j, p in enumerate(flat[i]):
                    row[f"{prefix}p_{_label(j, class_names)}"] = float(p)
            else:
                base = name if len(outputs) > 1 else "prediction"
                for j, v in enumerate(flat[i]):
                    row[f"{base}_{j}" if flat.shape[1] > 1 else base] = float(v)
    if path.suffix == ".json":
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
