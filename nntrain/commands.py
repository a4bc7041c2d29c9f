"""What each CLI command does, apart from parsing arguments and printing errors."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

import nntrain
from nntrain.config.loader import LoadedConfig, load_config
from nntrain.custom import require_trust
from nntrain.errors import DataError, UserError
from nntrain.fsutil import atomic_write_json, atomic_write_text
from nntrain.runs import Run, create_run, resolve_run


def configure_jax() -> None:
    """Persistent compilation cache on by default: a second run skips most compile time."""
    import jax

    from nntrain.data.fashion_mnist import cache_root

    cache = os.environ.get("NNTRAIN_JAX_CACHE") or str(cache_root() / "jax-cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    # small CPU programs compile in under the 1 s default and would never be cached
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def dump_config(loaded: LoadedConfig) -> str:
    data = loaded.config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def _prepare(loaded: LoadedConfig):
    from nntrain.build import prepare

    return prepare(loaded)


def _load_data(setup, base_dir: Path, console: Console, quiet: bool):
    from nntrain.data.sources import load_dataset

    config = setup.loaded.config
    status = console.status("Loading data...") if not quiet and console.is_terminal else None
    if status:
        status.start()
    try:
        return load_dataset(config.data, setup.io, base_dir, config.seed)
    finally:
        if status:
            status.stop()


# -- validate / summary ------------------------------------------------------------------------
def validate(config_path: Path, overrides: list[str], console: Console) -> None:
    loaded = load_config(config_path, overrides)
    setup = _prepare(loaded)
    model = setup.model
    console.print(
        f"[green]✓[/] {config_path} is valid: model '{loaded.config.name}', "
        f"{len(setup.graph.nodes)} layers, {model.trainable_count + model.non_trainable_count:,}"
        f" parameters, outputs {', '.join(setup.graph.outputs)}", highlight=False)


def summary(config_path: Path, overrides: list[str], console: Console) -> None:
    from nntrain.summary import print_summary

    loaded = load_config(config_path, overrides)
    setup = _prepare(loaded)
    print_summary(setup.model, console, title=f'Model: "{loaded.config.name}"')


# -- fit -------------------------------------------------------------------------------------
def fit(config_path: Path | None, overrides: list[str], runs_dir: Path, console: Console, *,
        resume: str | None = None, quiet: bool = False, trust_code: bool = False) -> int:
    from nntrain.train.fit import Fitter

    run: Run | None = None
    if resume is not None:
        run = resolve_run(resume, runs_dir)
        base_dir = Path(run.info().get("config_dir", run.path))
        loaded = load_config(run.config_path, overrides, search_dir=base_dir)
        if config_path is None:  # a CONFIG given with --resume is the user's own code
            require_trust(loaded.config, trust_code, run.path)
        _refuse_changed_config(run, loaded, config_path, overrides)
    else:
        if config_path is None:
            raise UserError("fit needs a CONFIG file (or --resume RUN)",
                            "e.g. nntrain fit configs/fashion_mlp.yaml")
        loaded = load_config(config_path, overrides)
        base_dir = config_path.resolve().parent
    configure_jax()
    setup = _prepare(loaded)
    dataset = _load_data(setup, base_dir, console, quiet)

    if run is None:  # only now, with config, model and data all checked, touch the disk
        run = create_run(runs_dir, loaded.config.name)
        atomic_write_text(run.config_path, dump_config(loaded))
        from nntrain.summary import summary_text

        atomic_write_text(run.path / "summary.txt",
                          summary_text(setup.model, f'Model: "{loaded.config.name}"'))
        run.update_info(**_run_record(loaded, dataset, base_dir))
    run.update_info(status="running", command=sys.argv, resumed=resume is not None,
                    end=None)
    fitter = Fitter(setup, dataset, run, console, quiet)
    initial_epoch = fitter.restore() if resume is not None else 0
    if not quiet:
        what = f"Resuming {run.path} at epoch {initial_epoch + 1}" if resume else \
            f"Training {loaded.config.name} -> {run.path}"
        console.print(f"{what}  ({len(dataset.train):,} train, "
                      f"{len(dataset.validation) if dataset.validation else 0:,} validation"
                      f" examples)", highlight=False)
    status = "failed"
    try:
        with _stop_on_signals(fitter, console):
            result = fitter.fit(initial_epoch)
        status = result.status
        if fitter.stop_signal is not None:
            run.update_info(status=status, end=_now(), stop_reason=result.stop_reason)
            console.print(f"[yellow]Stopped ({signal.Signals(fitter.stop_signal).name}): "
                          f"{result.stop_reason}.[/] Continue with: nntrain fit --resume "
                          f"{run.path}", soft_wrap=True)
            return 128 + fitter.stop_signal  # 130 for Ctrl-C, 143 for SIGTERM
        test = fitter.evaluate_test()
        metrics = run.read_json("metrics.json")
        if test is not None:
            metrics["test"] = test
            metrics["test_checkpoint"] = "best"
        atomic_write_json(run.path / "metrics.json", metrics)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once; the last checkpoint stands
        status = "stopped"
        run.update_info(status=status, end=_now(), stop_reason="interrupted")
        console.print(f"[yellow]Interrupted.[/] Continue from the last finished epoch with: "
                      f"nntrain fit --resume {run.path}", soft_wrap=True)
        return 130
    finally:
        if status == "failed":
            run.update_info(status="failed", end=_now())
    run.update_info(status=status, end=_now(), stop_reason=result.stop_reason or None)
    if not quiet:
        _print_fit_result(console, run, result, test)
    return 0


@contextlib.contextmanager
def _stop_on_signals(fitter, console: Console):
    """Ctrl-C or SIGTERM (a cluster preempting the job): finish the chunk running now, save a
    checkpoint, stop. A second Ctrl-C stops at once."""

    def handle(signum, frame):
        if fitter.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        fitter.request_stop(signum)
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping after the current "
                      "steps (Ctrl-C again to stop at once)[/]", soft_wrap=True)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _refuse_changed_config(run: Run, loaded: LoadedConfig, config_path: Path | None,
                           overrides: list[str]) -> None:
    if config_path is None:
        return
    given = dump_config(load_config(config_path, overrides))
    saved = dump_config(loaded)
    if given != saved:
        diff = "".join(difflib.unified_diff(saved.splitlines(True), given.splitlines(True),
                                            str(run.config_path), str(config_path)))
        raise UserError(f"{config_path} differs from the config the run started with:\n{diff}",
                        f"resume without CONFIG to continue as started: "
                        f"nntrain fit --resume {run.path}")


def _run_record(loaded: LoadedConfig, dataset, base_dir: Path) -> dict[str, Any]:
    import jax
    import optax

    record = {
        "name": loaded.config.name,
        "config_source": str(loaded.source),
        "config_dir": str(base_dir),
        "start": _now(),
        "seed": loaded.config.seed,
        "versions": {"nntrain": nntrain.__version__, "jax": jax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
        "devices": [str(d) for d in jax.devices()],
        "data": {name: {"examples": len(part), "sha256": part.digest()}
                 for name, part in (("train", dataset.train),
                                    ("validation", dataset.validation),
                                    ("test", dataset.test)) if part is not None},
    }
    commit = _git_commit(base_dir)
    if commit:
        record["git_commit"] = commit
    return record


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _print_fit_result(console: Console, run: Run, result, test) -> None:
    console.print(f"[bold]{run.name}: {result.status}[/]"
                  + (f" ({result.stop_reason})" if result.stop_reason else ""), soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("epochs", str(len(result.history)))
    if result.best_epoch is not None:
        table.add_row("best epoch", f"{result.best_epoch} ({result.monitor} "
                      f"{result.best_value:.4f})")
        best = result.history[result.best_epoch - 1]
        table.add_row("at best epoch", "  ".join(
            f"{k} {v:.4f}" for k, v in best.items() if k not in ("epoch", "seconds",
                                                                 "learning_rate")))
    if test:
        table.add_row("test (best weights)", "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
    table.add_row("time", f"{sum(r['seconds'] for r in result.history):.1f}s")
    table.add_row("run", str(run.path))
    console.print(table)


# -- evaluate / predict ----------------------------------------------------------------------
def _open_run(run_spec: str, runs_dir: Path, checkpoint_name: str, trust_code: bool):
    """A run's setup, data and weights, read back from its directory."""
    import jax

    from nntrain import checkpoint as ckpt

    run = resolve_run(run_spec, runs_dir)
    if not run.config_path.exists():
        raise UserError(f"{run.path} has no config.yaml", "the run directory is incomplete")
    base_dir = Path(run.info().get("config_dir", run.path))
    loaded = load_config(run.config_path, search_dir=base_dir)
    require_trust(loaded.config, trust_code, run.path)  # before anything is imported
    configure_jax()
    setup = _prepare(loaded)
    folder = run.checkpoints / checkpoint_name
    if checkpoint_name == "best" and ckpt.find(folder) is None:
        folder = run.checkpoints / "last"
    arrays, meta = ckpt.load(folder)
    params, state = jax.eval_shape(setup.model.init, jax.random.key(0))
    weights = ckpt.unflatten({"params": params, "state": state},
                             {k: v for k, v in arrays.items()
                              if k.startswith(("params/", "state/"))}, str(folder))
    return run, setup, jax.device_put(weights), meta, base_dir


def evaluate(run_spec: str, runs_dir: Path, console: Console, *, split: str = "test",
             checkpoint_name: str = "best", as_json: bool = False,
             trust_code: bool = False) -> None:
    from nntrain.train.fit import make_programs
    from nntrain.train.programs import to_device

    run, setup, weights, meta, base_dir = _open_run(run_spec, runs_dir, checkpoint_name,
                                                    trust_code)
    dataset = _load_data(setup, base_dir, console, quiet=as_json)
    data = dataset.split(split)
    programs = make_programs(setup)
    figures = programs.evaluate(weights["params"], weights["state"], to_device(data), len(data))
    metrics = run.read_json("metrics.json")
    metrics.setdefault("evaluations", []).append({
        "time": _now(), "split": split, "checkpoint": checkpoint_name,
        "epoch": meta.get("epoch"), "examples": len(data), **figures})
    atomic_write_json(run.path / "metrics.json", metrics)
    if as_json:
        print(json.dumps(figures))
        return
    console.print(f"{run.path}: {split} split ({len(data):,} examples), {checkpoint_name} "
                  f"weights (epoch {meta.get('epoch')})", soft_wrap=True)
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)


def predict(run_spec: str, runs_dir: Path, console: Console, *, input_path: Path | None,
            split: str | None, limit: int | None, top: int, output: Path | None,
            checkpoint_name: str = "best", trust_code: bool = False) -> None:
    from nntrain.data.arrays import ArraySet
    from nntrain.data.sources import check_arrays
    from nntrain.predict import predict_arrays, prediction_table, write_predictions

    if output is not None and output.suffix not in (".csv", ".npy", ".npz", ".json"):
        raise UserError(f"--output {output}: unknown format '{output.suffix}'",
                        "use a .csv, .npy, .npz or .json file name")
    run, setup, weights, _meta, base_dir = _open_run(run_spec, runs_dir, checkpoint_name,
                                                     trust_code)
    if output is not None and output.suffix == ".npy" and len(setup.graph.outputs) > 1:
        raise UserError(f"--output {output}: the model has {len(setup.graph.outputs)} outputs",
                        "use .npz (one array per output), .csv or .json")
    targets = None
    if input_path is not None:
        data = ArraySet(_read_inputs(input_path, setup.io.inputs))
        check_arrays(data, setup.io, f"input {input_path}", targets=False)
    else:
        dataset = _load_data(setup, base_dir, console, quiet=False)
        data = dataset.split(split or "test")
        targets = data.y
    if limit is not None:
        data = data.take(slice(0, limit))
        targets = None if targets is None else {k: v[:limit] for k, v in targets.items()}
    class_names = _class_names(setup)
    outputs = predict_arrays(setup, weights, data)
    if output is not None:
        write_predictions(output, outputs, class_names, setup)
        console.print(f"wrote {len(data):,} predictions to {output}", highlight=False)
    else:
        console.print(prediction_table(outputs, class_names, top, targets, setup))


def _class_names(setup) -> list[str] | None:
    from nntrain.data import fashion_mnist

    dataset = setup.loaded.config.data.dataset
    if dataset in fashion_mnist.DATASETS:
        return list(fashion_mnist.DATASETS[dataset].class_names)
    return None


def _read_inputs(path: Path, inputs: dict) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e or 'empty file'}",
                        "give an .npy array or an .npz archive (no pickled objects)") from None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise DataError(f"{path}: the model has inputs {', '.join(inputs)}",
                            "give an .npz with one array per input name")
        return {next(iter(inputs)): loaded}
    with loaded:
        names = list(loaded.files)
        if len(inputs) == 1 and len(names) == 1:
            return {next(iter(inputs)): loaded[names[0]]}
        missing = [n for n in inputs if n not in names]
        if missing:
            raise DataError(f"{path}: no arrays for inputs {', '.join(missing)} "
                            f"(found {', '.join(names)})")
        return {n: loaded[n] for n in inputs}
