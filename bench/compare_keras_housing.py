"""Side-by-side test RMSE of nntrain and Keras 3 (JAX backend) on the California housing configs.

For every seed, both frameworks train the architecture declared in the config on the very same
train/validation/test split, which comes from nntrain's own loader (the split depends on the
config's seed, so each seed gets its own split, shared by the two frameworks). nntrain runs
through its CLI in a subprocess; Keras is built from the same config graph in this process.

    pip install keras            # dev-only dependency, Keras 3
    python bench/compare_keras_housing.py --source path/to/housing.csv [--seeds 3] [--epochs N]

Prints markdown tables: mean ± std (sample std over seeds) of the test RMSE of the main output,
the ratio nntrain/Keras, and time per run for each framework.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

from nntrain.build import prepare  # noqa: E402
from nntrain.config.entries import entry_args, entry_name  # noqa: E402
from nntrain.config.loader import load_config  # noqa: E402
from nntrain.data.sources import load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("configs/housing_mlp.yaml", "configs/housing_wide_deep.yaml")
METRIC = "root_mean_squared_error"


@dataclass
class Result:
    config: str
    nntrain_rmse: list[float] = field(default_factory=list)  # metrics.json: best checkpoint
    nntrain_last_rmse: list[float] = field(default_factory=list)  # last epoch's weights
    nntrain_best_epoch: list[int] = field(default_factory=list)
    keras_rmse: list[float] = field(default_factory=list)
    nntrain_wall: list[float] = field(default_factory=list)
    nntrain_fit: list[float] = field(default_factory=list)
    keras_wall: list[float] = field(default_factory=list)
    keras_fit: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def rmse_key(outputs: tuple[str, ...]) -> str:
    """nntrain's and Keras's name for the main output's RMSE."""
    return f"{outputs[0]}_{METRIC}" if len(outputs) > 1 else METRIC


def load(config_path: Path, overrides: list[str]):
    loaded = load_config(config_path, overrides)
    setup = prepare(loaded)
    ds = load_dataset(loaded.config.data, setup.io, config_path.parent, loaded.config.seed)
    return loaded, setup, ds


# -- nntrain ------------------------------------------------------------------------------------
def run_nntrain(config_path: Path, overrides: list[str], runs_dir: Path, ds, key: str):
    cmd = [sys.executable, "-m", "nntrain", "fit", str(config_path), "-q",
           "--runs-dir", str(runs_dir)]
    for o in overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    (run_dir,) = [p.parent for p in runs_dir.glob("*/*/metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    for name in ("train", "validation", "test"):  # the split Keras gets is the one nntrain saw
        if info["data"][name]["sha256"] != getattr(ds, name).digest():
            raise SystemExit(f"{config_path.name}: nntrain's {name} split differs from ours")
    history = (run_dir / "history.csv").read_text().splitlines()
    col = history[0].split(",").index("seconds")
    fit_seconds = sum(float(line.split(",")[col]) for line in history[1:])
    last = subprocess.run(
        [sys.executable, "-m", "nntrain", "evaluate", str(run_dir), "--checkpoint", "last",
         "--json", "--runs-dir", str(runs_dir)],
        check=True, cwd=ROOT, capture_output=True, text=True)
    last_rmse = json.loads(last.stdout.strip().splitlines()[-1])[key]
    return (metrics["test"][key], last_rmse, metrics["best_epoch"], wall, fit_seconds)


# -- Keras --------------------------------------------------------------------------------------
def keras_model(setup, ds):
    """The config's graph as a Keras functional model; Normalization adapted on training data."""
    import keras

    graph = setup.graph
    tensors = {name: keras.Input(shape=tuple(spec.shape), name=name, dtype=spec.dtype)
               for name, spec in graph.inputs.items()}
    for node in graph.nodes:
        args = node.args
        ins = [tensors[i] for i in node.inputs]
        if node.type == "normalization":
            if args.mean is not None or node.inputs[0] not in graph.inputs:
                raise SystemExit(f"{node.name}: only adapted normalization of an input here")
            layer = keras.layers.Normalization(axis=args.axis, name=node.name)
            layer.adapt(ds.train.x[node.inputs[0]])
        elif node.type == "dense":
            layer = keras.layers.Dense(args.units, activation=args.activation,
                                       use_bias=args.use_bias, name=node.name,
                                       kernel_initializer=args.kernel_initializer,
                                       bias_initializer=args.bias_initializer)
        elif node.type == "concatenate":
            layer = keras.layers.Concatenate(axis=args.axis, name=node.name)
        else:
            raise SystemExit(f"{node.name}: layer type {node.type} is not translated to Keras")
        tensors[node.name] = layer(ins if len(ins) > 1 else ins[0])
    outputs = {name: tensors[name] for name in graph.outputs}
    return keras.Model({n: tensors[n] for n in graph.inputs}, outputs)


def keras_compile_args(loaded, outputs: tuple[str, ...]):
    import keras

    c = loaded.config.compile
    opt_name, opt = entry_name(c.optimizer), entry_args(c.optimizer)
    if opt_name != "adam" or opt.amsgrad or opt.clipnorm or opt.clipvalue or opt.global_clipnorm:
        raise SystemExit(f"optimizer {opt_name}: only plain Adam is translated")
    optimizer = keras.optimizers.Adam(learning_rate=opt.learning_rate, beta_1=opt.beta_1,
                                      beta_2=opt.beta_2, epsilon=opt.epsilon)
    loss = c.loss if isinstance(c.loss, dict) else {o: c.loss for o in outputs}
    loss = {o: entry_name(v) if not isinstance(v, str) else v for o, v in loss.items()}
    metrics = c.metrics if isinstance(c.metrics, dict) else {o: c.metrics for o in outputs}
    metrics = {o: [entry_name(m) if not isinstance(m, str) else m for m in ms]
               for o, ms in metrics.items()}
    for ms in metrics.values():
        if ms != ["RootMeanSquaredError"]:
            raise SystemExit(f"metrics {ms}: only RootMeanSquaredError is translated")
    metrics = {o: [keras.metrics.RootMeanSquaredError()] for o in metrics}
    weights = dict(c.loss_weights) if c.loss_weights else None
    return dict(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=weights)


def run_keras(loaded, setup, ds, seed: int, key: str):
    import keras

    outputs = setup.graph.outputs
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = keras_model(setup, ds)
    model.compile(**keras_compile_args(loaded, outputs))
    fit = loaded.config.fit
    fit_start = time.perf_counter()
    model.fit(ds.train.x, ds.train.y, epochs=fit.epochs, batch_size=fit.batch_size,
              validation_data=(ds.validation.x, ds.validation.y), shuffle=True, verbose=0)
    fit_seconds = time.perf_counter() - fit_start
    scores = model.evaluate(ds.test.x, ds.test.y, batch_size=fit.batch_size, verbose=0,
                            return_dict=True)
    wall = time.perf_counter() - start
    if key not in scores:
        raise SystemExit(f"Keras's evaluate has no {key}: {sorted(scores)}")
    return float(scores[key]), wall, fit_seconds


# -- report -------------------------------------------------------------------------------------
def mean_std(values: list[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f}"


def report(results: list[Result], epochs: str) -> str:
    n = len(results[0].seeds)
    lines = [
        f"Test RMSE of the main output (target in $100,000) after {epochs} epochs, "
        f"mean ± std over {n} seed(s) (seeds {', '.join(map(str, results[0].seeds))}); "
        "time in seconds per run.",
        "",
        "| config | nntrain test RMSE | Keras 3 (JAX) test RMSE | nntrain / Keras "
        "| nntrain last-epoch RMSE | last / Keras | nntrain wall (fit) s | Keras wall (fit) s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        k = statistics.fmean(r.keras_rmse)
        lines.append(
            f"| {r.config} | {mean_std(r.nntrain_rmse)} | {mean_std(r.keras_rmse)} "
            f"| {statistics.fmean(r.nntrain_rmse) / k:.3f} | {mean_std(r.nntrain_last_rmse)} "
            f"| {statistics.fmean(r.nntrain_last_rmse) / k:.3f} "
            f"| {statistics.fmean(r.nntrain_wall):.1f} ({statistics.fmean(r.nntrain_fit):.1f}) "
            f"| {statistics.fmean(r.keras_wall):.1f} ({statistics.fmean(r.keras_fit):.1f}) |")
    lines += ["", "Per seed:", "",
              "| config | seed | nntrain (best epoch) | nntrain last epoch | Keras |",
              "|---|---|---|---|---|"]
    for r in results:
        for i, seed in enumerate(r.seeds):
            lines.append(f"| {r.config} | {seed} | {r.nntrain_rmse[i]:.4f} "
                         f"({r.nntrain_best_epoch[i]}) | {r.nntrain_last_rmse[i]:.4f} "
                         f"| {r.keras_rmse[i]:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path,
                        help="the California housing CSV (handson-ml2 housing.csv layout)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per framework (default 3)")
    parser.add_argument("--first-seed", type=int, default=None,
                        help="first seed (default: the config's seed); then +1, +2, ...")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override fit.epochs for both frameworks")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)
    source = args.source.expanduser().resolve()
    if not source.exists():
        parser.error(f"--source: no such file: {source}")

    import jax
    import keras

    print(f"keras {keras.__version__} (backend {keras.backend.backend()}), jax {jax.__version__}"
          f", devices {jax.devices()}", file=sys.stderr)
    results, epochs = [], set()
    for config in args.configs:
        path = (ROOT / config).resolve()
        base = [f"data.source={source}"] + ([] if args.epochs is None
                                            else [f"fit.epochs={args.epochs}"])
        first = args.first_seed if args.first_seed is not None else \
            load_config(path, base).config.seed
        result = Result(config=Path(config).name)
        for seed in range(first, first + args.seeds):
            overrides = [*base, f"seed={seed}"]
            loaded, setup, ds = load(path, overrides)
            epochs.add(loaded.config.fit.epochs)
            key = rmse_key(setup.graph.outputs)
            with tempfile.TemporaryDirectory(prefix="nntrain-bench-") as runs:
                rmse, last, best_epoch, wall, fit = run_nntrain(path, overrides, Path(runs),
                                                                ds, key)
            k_rmse, k_wall, k_fit = run_keras(loaded, setup, ds, seed, key)
            print(f"{result.config} seed {seed}: nntrain {rmse:.4f} (best epoch {best_epoch}, "
                  f"last {last:.4f}, {wall:.1f}s)  keras {k_rmse:.4f} ({k_wall:.1f}s)",
                  file=sys.stderr)
            result.seeds.append(seed)
            result.nntrain_rmse.append(rmse)
            result.nntrain_last_rmse.append(last)
            result.nntrain_best_epoch.append(best_epoch)
            result.nntrain_wall.append(wall)
            result.nntrain_fit.append(fit)
            result.keras_rmse.append(k_rmse)
            result.keras_wall.append(k_wall)
            result.keras_fit.append(k_fit)
        results.append(result)
    print(report(results, "/".join(map(str, sorted(epochs)))))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
