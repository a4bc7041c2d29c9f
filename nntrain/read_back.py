"""`nntrain evaluate` and `nntrain predict`: a run read back from its directory (its config,
its checkpoint, its data or new inputs), figures and predictions from the weights asked for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from nntrain.commands import configure_jax, load_data, prepare_setup, warn_if_data_changed
from nntrain.config.loader import load_config
from nntrain.consoles import make_console, shell
from nntrain.custom import require_trust
from nntrain.data.arrays import native_byte_order, read_numpy_file
from nntrain.data.stream import examples
from nntrain.errors import DataError, UserError
from nntrain.fsutil import atomic_write_json, exclusive, special_file
from nntrain.runs import Run, now_text, resolve_run


def _which_weights(meta: dict[str, Any]) -> str:
    """The checkpoint read, for a reader: `best weights (epoch 12)`."""
    substitute = f"; {meta['substituted']}" if meta["substituted"] else ""
    # a checkpoint made inside an epoch (training interrupted) says how far it got
    when = f"epoch {meta.get('epoch')}" if "step_in_epoch" not in meta else \
        f"epoch {meta.get('epoch')} and {meta['step_in_epoch']} steps of the next"
    return f"{meta['checkpoint']} weights ({when}{substitute})"


def _open_run(run_spec: str, runs_dir: Path, checkpoint_name: str, trust_code: bool):
    """A run's setup, weights and their checkpoint.json (with `checkpoint`: the folder read,
    `last` when the run keeps no `best`), read back from its directory."""
    import jax

    from nntrain import checkpoint as ckpt

    run = resolve_run(run_spec, runs_dir)
    run.require_config()
    info = run.info()
    base_dir = Path(info.get("config_dir", run.path))
    loaded = load_config(run.config_path, search_dir=base_dir, saved=True)
    require_trust(loaded.config, trust_code, run.path)  # before anything is imported
    configure_jax()
    setup = prepare_setup(loaded, training=False)  # evaluate and predict hold the weights alone
    folder = run.checkpoints / checkpoint_name
    if checkpoint_name == "best" and ckpt.find(folder) is None:
        if isinstance(run.read_json("metrics.json").get("best_epoch"), int):
            # a best epoch was saved: its checkpoint is gone, not merely never written
            last = run.checkpoints / "last"
            raise ckpt.CheckpointError(
                f"no checkpoint at {folder}" + (f" or {last}" if ckpt.find(last) is None
                                                else "")
                + ", though metrics.json records a best epoch",
                "the checkpoints were removed or moved: restore them, or train again"
                if ckpt.find(last) is None else "the best weights were removed or moved: "
                "restore them, or use --checkpoint last for the last epoch's weights")
        folder = run.checkpoints / "last"  # no epoch improved on the monitored figure
        substituted = "the run keeps no best checkpoint"
    else:
        substituted = None
    if ckpt.find(folder) is None and info.get("status") == "failed":
        raise ckpt.CheckpointError(
            f"{run.path} failed before it finished an epoch"
            + (f" ({info['stop_reason']})" if info.get("stop_reason") else ""),
            "it has no weights to evaluate or predict with: fix the cause and train again")
    try:
        arrays, meta = ckpt.load(folder)
    except ckpt.CheckpointError as e:
        # no silent substitution: figures and predictions must come from the weights asked for
        if not e.message.startswith("damaged checkpoint"):
            raise
        other = "last" if checkpoint_name == "best" else "best"
        resume = f"remove {folder} and continue training with " \
            f"`{shell('nntrain', 'fit', '--resume', run.path)}` (its next improvement saves " \
            "new best weights)" \
            if checkpoint_name == "best" else "continue training from the previous " \
            f"checkpoint with `{shell('nntrain', 'fit', '--resume', run.path)}`"
        raise ckpt.CheckpointError(e.message, f"the file was changed or cut short: try "
                                   f"--checkpoint {other}, or {resume}") from None
    read = ckpt.find(folder) or folder
    if read != folder:  # a save cut short between its renames, or the folder removed
        substituted = f"{folder.name} is missing, so the one saved before it"
        make_console(stderr=True).print(f"[yellow]warning:[/] {folder} is missing; read "
                                        f"{read.name}, the checkpoint saved before it "
                                        f"(epoch {meta.get('epoch')})", soft_wrap=True)
    params, state = jax.eval_shape(setup.model.init, jax.random.key(0))
    weights = ckpt.unflatten({"params": params, "state": state},
                             {k: v for k, v in arrays.items()
                              if k.startswith(("params/", "state/"))}, str(folder))
    return run, setup, jax.device_put(weights), \
        {**meta, "checkpoint": read.name, "substituted": substituted}, base_dir


def evaluate(run_spec: str, runs_dir: Path, console: Console, *, split: str = "test",
             checkpoint_name: str = "best", as_json: bool = False,
             trust_code: bool = False) -> None:
    import jax

    from nntrain.data.generator import GeneratorSplit
    from nntrain.data.stream import memory_budget, nbytes
    from nntrain.progress import fmt_number
    from nntrain.train.fit import make_programs
    from nntrain.train.programs import place

    run, setup, weights, meta, base_dir = _open_run(run_spec, runs_dir, checkpoint_name,
                                                    trust_code)
    dataset = load_data(setup, base_dir, console, quiet=as_json, split=split)
    warn_if_data_changed(run, dataset, make_console(stderr=True), (split,),
                          "these figures are on the new data")
    data = dataset.split(split)
    budget = memory_budget(setup.loaded.config.data.device_memory, jax.devices()[0])
    programs = make_programs(setup, eval_rows=None if isinstance(data, GeneratorSplit)
                             else len(data))
    figures = programs.evaluate(weights["params"], weights["state"],
                                place(data, None, nbytes(data) > budget), len(data))
    try:
        with exclusive(run.path / "metrics.json"):  # the run may be training now
            metrics = run.read_json("metrics.json")
            metrics.setdefault("evaluations", []).append({
                "time": now_text(), "split": split, "checkpoint": meta["checkpoint"],
                "epoch": meta.get("epoch"),
                **({"step_in_epoch": meta["step_in_epoch"]} if "step_in_epoch" in meta
                   else {}),
                "examples": examples(data), **figures})
            atomic_write_json(run.path / "metrics.json", metrics)
    except OSError as e:  # a read-only run (an archive, a shared folder): the figures stand
        make_console(stderr=True).print(f"[yellow]warning:[/] not recorded in "
                                        f"{run.path / 'metrics.json'}: {e.strerror or e}",
                                        soft_wrap=True)
    if as_json:
        print(json.dumps(figures))
        return
    console.print(f"{run.path}: {split} split ({examples(data):,} examples), "
                  f"{_which_weights(meta)}", soft_wrap=True)
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, fmt_number(value))  # as `runs` prints them
    console.print(table)


TABLE_ROWS = 20  # predict's table, without --limit or --output


def _check_output_path(output: Path, run_folder: Path, input_path: Path | None,
                       data: Any, base_dir: Path) -> None:
    """Predictions never overwrite what they are read from: the input, the run's data
    files, or the run's own records (inside the run directory, only its predictions/ folder
    is for them)."""
    target = output.resolve()
    sources = [input_path] + [base_dir / name for name in (
        data.train, data.source, data.validation and data.validation.path,
        data.test and data.test.path) if name]
    for source in sources:
        if source is not None and source.exists() and (
                target == source.resolve() or target.is_relative_to(source.resolve())):
            raise UserError(f"--output {output} is {'in ' if target != source.resolve() else ''}"
                            f"{source}, which the predictions are read from: writing it would "
                            "replace examples with their predictions", "give another file name")
    # this run's directory, or any other run's (a folder with a run.json)
    runs = [run_folder.resolve(), *(f for f in target.parents if (f / "run.json").is_file())]
    for folder in runs:
        if target.is_relative_to(folder) and not target.is_relative_to(folder / "predictions"):
            which = "the run directory" if folder == runs[0] else f"the run directory {folder}"
            raise UserError(f"--output {output} is inside {which}, where the run keeps its own "
                            f"records", f"write under {folder / 'predictions'}/, or outside "
                            "the run directory")


def predict(run_spec: str, runs_dir: Path, console: Console, *, input_path: Path | None,
            split: str | None, limit: int | None, top: int, output: Path | None,
            checkpoint_name: str = "best", trust_code: bool = False,
            show: int | None = None) -> None:
    from nntrain.data.arrays import ArraySet
    from nntrain.data.sources import check_arrays
    from nntrain.predict import predict_arrays, prediction_table, write_predictions

    if show is not None and top > 1:
        raise UserError(f"--top {top} ranks classes in the table; --show draws each image "
                        "with its most likely class", "drop one of --top and --show")
    if output is not None and show is None and top > 1:
        raise UserError(f"--top {top} ranks classes in the table; --output writes every "
                        "class's probability", "drop --top, or --output to see the table")
    if show is not None:
        if output is not None and output.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UserError(f"--output {output}: --show draws an image",
                            "give a .png (or .svg, .pdf) file name, or leave --output out "
                            "for predictions/show.png in the run directory")
    elif output is not None and output.suffix.lower() not in (".csv", ".npy", ".npz", ".json"):
        raise UserError(f"--output {output}: unknown format '{output.suffix}'",
                        "use a .csv, .npy, .npz or .json file name")
    run, setup, weights, meta, base_dir = _open_run(run_spec, runs_dir, checkpoint_name,
                                                     trust_code)
    if output is not None and output.suffix.lower() == ".npy" and len(setup.graph.outputs) > 1:
        raise UserError(f"--output {output}: the model has {len(setup.graph.outputs)} outputs",
                        "use .npz (one array per output), .csv or .json")
    if output is not None:
        _check_output_path(output, run.path, input_path, setup.loaded.config.data, base_dir)
    if show is not None:
        from nntrain.predict import image_shape_problem

        problem = image_shape_problem(setup)
        if problem:
            raise UserError(f"--show draws images: {problem}",
                            "use --output FILE.csv or the table for this model")
        limit = show if limit is None else min(limit, show)
    targets, class_names = None, _class_names(setup, run)
    if input_path is not None and input_path.suffix.lower() == ".csv":
        config = setup.loaded.config
        if not config.data.is_table():
            raise UserError(f"{input_path}: a CSV file of new rows needs a model trained on a "
                            "table (a .csv file or a table dataset)",
                            "give the inputs as an .npy or .npz file")
        from nntrain.data.sources import table_inputs

        recorded = run.info().get("table_encoding")
        data = table_inputs(config.data, setup.io, base_dir, config.seed, input_path,
                            None if recorded is None else (recorded, str(run.path / "run.json")))
        if recorded is None:  # a run of an older nntrain: encoded from the training file now
            warn_if_data_changed(run, load_data(setup, base_dir, console, quiet=True,
                                                  split="train"),
                                  make_console(stderr=True), ("train",),
                                  "the new rows are encoded (categories, fill values) as the "
                                  "training file is now, not as when the run trained")
        check_arrays(data, setup.io, f"input {input_path}", targets=False)
    elif input_path is not None:
        data_config = setup.loaded.config.data
        target_names = {data_config.y, *setup.io.outputs} | (
            {data_config.sample_weight} if isinstance(data_config.sample_weight, str) else set())
        data = ArraySet(_read_inputs(input_path, setup.io.inputs, data_config.x, target_names))
        check_arrays(data, setup.io, f"input {input_path}", targets=False)
        _warn_if_scaled_already(setup, data, make_console(stderr=True))
    else:
        dataset = load_data(setup, base_dir, console, quiet=False, split=split or "test")
        warn_if_data_changed(run, dataset, make_console(stderr=True), (split or "test",),
                              "these predictions are for the new data")
        if dataset.generator is not None:
            raise UserError("predict reads a split's examples from files, and this run's "
                            "data comes from a generator",
                            f"give the inputs as a file: nntrain predict {run_spec} "
                            "INPUTS.npz (or .npy)")
        data = dataset.split(split or "test")
        targets = data.y
        class_names = class_names or dataset.class_names
    total = len(data)
    if limit is None and output is None and show is None and total > TABLE_ROWS:
        limit = TABLE_ROWS  # a table on screen: its first rows, not thousands
    if limit is not None:
        data = data.take(slice(0, limit))
        targets = None if targets is None else {k: v[:limit] for k, v in targets.items()}
    if len(data) == 0:
        raise UserError("no examples to predict", "the input or split is empty")
    step_masks: dict[str, np.ndarray] = {}  # a tagger's real (not padded) steps
    outputs = predict_arrays(setup, weights, data, step_masks)
    broken = sum(int((~np.isfinite(v)).any(axis=tuple(range(1, v.ndim))).sum())
                 for v in outputs.values() if np.issubdtype(v.dtype, np.floating))
    if broken:
        make_console(stderr=True).print(
            f"[yellow]warning:[/] {broken:,} predictions are NaN or infinite (null in a .json "
            "file): their inputs may be far outside the training data's range")
    if show is not None:
        _show_images(run, setup, data, outputs, targets, class_names, output, console,
                     split or ("test" if input_path is None else str(input_path)))
        return
    if output is not None:
        value_names = {}
        if setup.loaded.config.data.is_table():
            from nntrain.data.sources import target_columns

            value_names = {out: target_columns(setup.loaded.config.data, out)
                           for out in setup.graph.outputs}
        write_predictions(output, outputs, class_names, setup, targets, step_masks,
                          value_names)
        console.print(f"wrote {len(data):,} prediction{'s' if len(data) != 1 else ''} to "
                      f"{output}, from the {_which_weights(meta)}", highlight=False,
                      soft_wrap=True)
    else:
        console.print(prediction_table(outputs, class_names, top, targets, setup, step_masks))
        shown = f"the first {len(data):,} of {total:,} examples (--limit N for more, " \
            "--output FILE for all), " if len(data) < total else ""
        console.print(f"{shown}from the {_which_weights(meta)}", highlight=False,
                      soft_wrap=True)


def _show_images(run: Run, setup, data, outputs, targets, class_names, output: Path | None,
                 console: Console, what: str) -> None:
    from nntrain.predict import plot_image_grid, show_labels

    name, predicted, true = show_labels(setup, outputs, targets, class_names)
    if not predicted:
        raise UserError("--show draws predicted classes: the model has no classifier output "
                        "(softmax, sigmoid, or a sparse categorical loss)",
                        "use --output FILE.csv or the table for this model")
    path = output if output is not None else run.path / "predictions" / "show.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = next(iter(data.x.values()))
    title = f"{run.label}: {what}" + (f", output {name}" if len(outputs) > 1 else "")
    wrong, shown = plot_image_grid(path, images, predicted, true, title)
    figures = f"; {wrong} of {shown} wrong (in red)" if true is not None else ""
    console.print(f"wrote {shown} images with predicted classes to {path}{figures}",
                  soft_wrap=True, highlight=False)


def _warn_if_scaled_already(setup, data, console: Console) -> None:
    """Images scaled to [0, 1] given to a model that scales raw pixels itself (rescaling
    1/255 first): every prediction would be made on nearly black images, without a word."""
    for node in setup.graph.nodes:
        if node.type != "rescaling" or node.inputs[0] not in data.x \
                or abs(node.args.scale) > 0.01:
            continue
        values = data.x[node.inputs[0]]
        if values.dtype.kind == "f" and values.size and values.min() >= 0.0 \
                and values.max() <= 1.0:
            console.print(f"[yellow]warning:[/] input '{node.inputs[0]}' holds values in "
                          f"[0, 1], and the layer that takes it, '{node.name}', multiplies "
                          f"them by {node.args.scale:.4g}: it takes raw values (pixels "
                          "0..255), so give the inputs unscaled", soft_wrap=True,
                          highlight=False)


def _class_names(setup, run: Run) -> dict[str, list[str]] | None:
    """The class names of each output the run recorded (a CSV file's text labels, a
    built-in dataset's); for a run that recorded none, a built-in dataset's."""
    from nntrain.data import fashion_mnist

    outputs = list(setup.io.outputs)
    recorded = run.info().get("class_names")
    if isinstance(recorded, list):  # an older run's, of its one output
        recorded = {outputs[0]: recorded}
    if isinstance(recorded, dict) and all(
            isinstance(names, list) and all(isinstance(n, str) for n in names)
            for names in recorded.values()):
        return recorded
    dataset = setup.loaded.config.data.dataset
    if dataset in fashion_mnist.DATASETS:
        return {out: list(fashion_mnist.DATASETS[dataset].class_names) for out in outputs}
    return None


def _read_inputs(path: Path, inputs: dict, x_name: str,
                 targets: set[str]) -> dict[str, np.ndarray]:
    """The model's inputs from an .npy, or an .npz with one array per input name; a model
    of one input also reads the array its training file names `data.x` (`x`), so the
    training data's own .npz predicts as it is, or the one array of an .npz, unless that
    is named as targets are (`targets`: `y`, the outputs, the sample weights)."""
    if not path.exists():
        raise DataError(f"input file not found: {path}", "check the path: it is read from "
                        "the current folder")
    if special_file(path):
        raise DataError(f"input {path} is a pipe, a device or a socket, not a file",
                        "give an .npy or .npz file, or a folder of .npy files")
    names = ", ".join(f"{n}=..." for n in inputs)
    hint = "give an .npy array, an .npz archive or a folder of .npy files (no pickled " \
        f"objects), e.g. numpy.savez(FILE, {names})"
    if path.is_dir():  # a folder of .npy files, as training reads them
        from nntrain.data.sources import read_npy_folder

        loaded = read_npy_folder(path, hint)
    else:
        loaded = read_numpy_file(path, hint)
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise DataError(f"{path}: the model has inputs {', '.join(inputs)}",
                            f"give an .npz with one array per input name: numpy.savez(FILE, "
                            f"{names})")
        arrays = {next(iter(inputs)): loaded}
    else:
        found = list(loaded)
        missing = [n for n in inputs if n not in found]
        only = next(iter(inputs)) if len(inputs) == 1 else None
        if only is not None and only not in found and x_name not in found and \
                len(found) == 1 and found[0] in targets:
            raise DataError(f"{path} holds only '{found[0]}', the name of the targets, not of "
                            "inputs", f"save the inputs as {x_name} (numpy.savez(FILE, "
                            f"{x_name}=...)) or as {only}")
        if only is not None and only not in found and (len(found) == 1 or x_name in found):
            arrays = {only: loaded[found[0] if len(found) == 1 else x_name]}
        elif missing:
            raise DataError(f"{path}: no arrays for inputs {', '.join(missing)} "
                            + (f"(found {', '.join(found)})" if found else "(it holds none)"),
                            f"name the arrays after the model's inputs: numpy.savez(FILE, "
                            f"{names})")
        else:
            arrays = {n: loaded[n] for n in inputs}
    for name, array in arrays.items():
        if array.ndim == 0:
            shape = ", ".join(str(d) for d in inputs[name][0])
            raise DataError(f"{path}: the input '{name}' is a single value, not examples",
                            f"give an array of shape (N, {shape})")
    return {name: native_byte_order(array) for name, array in arrays.items()}
