"""Speed and memory of nntrain against Keras 3 (JAX backend) and a plain JAX + optax loop.

    python bench/run.py [--workload NAME] [--epochs N] [--repeats R] [--source housing.csv]

For each workload, every variant trains the same model on the same data (the split nntrain's
own loader makes, checked against the SHA-256 digests nntrain records in run.json), each in
its own subprocess, interleaved (A B C D E A B C D E ... over the repeats):

- nntrain: its CLI, `python -m nntrain fit CONFIG -q --runs-dir TMP --set ...`, with a fresh,
  empty JAX compilation cache (its first run on a machine);
- nntrain (warm cache): the same with a compilation cache filled by an untimed 1-epoch run;
- keras: Keras 3 on JAX, its defaults (`steps_per_execution=1`), fed as the textbook feeds it:
  pixels scaled in NumPy (`X_train / 255.`, float64 arrays) and a model without Rescaling;
- keras spe=K: the same with `steps_per_execution=K` (default 64);
- keras raw inputs: `steps_per_execution=K` with the stored uint8 pixels and the Rescaling
  layer inside the model, as nntrain runs it (only for workloads that start with rescaling);
- jax: a hand-written JAX + optax loop, `bench/peers.py` (what the hardware allows).

Prints a markdown table of medians over the repeats and ratios to nntrain: steady-state epoch
time (each run's median over epochs 2..N), the wall time between epoch ends, samples per
second, the time from launching the command to the end of epoch 1, and the peak resident
memory of the child process (its own `ru_maxrss`, read with `os.wait4`).
"""

from __future__ import annotations

import argparse
import compileall
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers.py"
VARIANTS = ("nntrain", "nntrain_warm", "keras", "keras_spe", "keras_raw", "jax")


@dataclass
class Workload:
    name: str
    config: str
    overrides: list[str]
    note: str = ""
    needs_source: bool = False
    epochs: int = 5  # default; --epochs overrides


def workloads(cpu: bool, full_cnn: bool) -> list[Workload]:
    cnn_subset = cpu and not full_cnn
    return [
        Workload("fashion_mlp_b32", "configs/fashion_mlp.yaml", ["fit.batch_size=32"]),
        Workload("fashion_mlp_b256", "configs/fashion_mlp.yaml", ["fit.batch_size=256"]),
        Workload("fashion_cnn_b128", "configs/fashion_cnn.yaml", ["fit.batch_size=128"]
                 + (["data.test={last: 45000}"] if cnn_subset else []),
                 "CPU subset: 10,000 train images (data.test={last: 45000} holds out the rest; "
                 "nntrain evaluates that test split once after training, outside the epoch "
                 "figures); --full-cnn for all 55,000" if cnn_subset else "", epochs=3),
        Workload("housing_mlp", "configs/housing_mlp.yaml", [], needs_source=True),
        Workload("compute_mlp", "bench/configs/compute_mlp.yaml", [],
                 "synthetic: 4 x Dense(1024, relu), 784 features, batch 256", epochs=3),
    ]


@dataclass
class Run:
    epoch_seconds: list[float]  # the framework's own per-epoch timer
    epoch_ends: dict[int, float]  # epoch -> seconds since launch, observed
    wall: float
    maxrss_mib: float
    val_loss: float | None


@dataclass
class Variant:
    key: str
    label: str
    runs: list[Run] = field(default_factory=list)


# -- children --------------------------------------------------------------------------------
def launch(cmd: list[str], env: dict, watch_dir: Path | None, log: Path, cwd: Path = ROOT):
    """Run `cmd` to completion; returns (launch time, wall, ru_maxrss MiB, stdout text,
    {rows in history.csv: its mtime}) with the child's own rusage from os.wait4."""
    observed: dict[int, float] = {}
    with open(log, "w") as out:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        history, last_mtime = None, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if watch_dir is not None:
                if history is None:
                    found = list(watch_dir.glob("*/*/history.csv"))
                    history = found[0] if found else None
                if history is not None:
                    try:
                        st = history.stat()
                        if st.st_mtime_ns != last_mtime:
                            last_mtime = st.st_mtime_ns
                            rows = len(history.read_text().splitlines()) - 1
                            observed.setdefault(rows, st.st_mtime_ns / 1e9 - t0)
                    except FileNotFoundError:
                        pass
            time.sleep(0.005 if watch_dir is not None else 0.02)
        wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    return t0, wall, usage.ru_maxrss / 1024, text, observed


NNTRAIN_SRC = ROOT  # the folder whose nntrain/ package the CLI child runs (--nntrain-src)
# The children get the environment as it was; this process (which imports JAX only to load
# the data and name the machine) must not take the GPU's memory from them.
CHILD_ENV = dict(os.environ)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def run_nntrain(wl_path: Path, overrides: list[str], cache: Path, digests: dict,
                logdir: Path) -> Run:
    with tempfile.TemporaryDirectory(prefix="nntrain-bench-runs-") as runs:
        cmd = [sys.executable, "-m", "nntrain", "fit", str(wl_path), "-q", "--runs-dir", runs]
        for o in overrides:
            cmd += ["--set", o]
        env = {**CHILD_ENV, "NNTRAIN_JAX_CACHE": str(cache),
               "PYTHONPATH": os.pathsep.join(
                   [str(NNTRAIN_SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
        _, wall, rss, _, observed = launch(cmd, env, Path(runs), logdir / "nntrain.log",
                                           cwd=NNTRAIN_SRC)
        (run_dir,) = [p.parent for p in Path(runs).glob("*/*/run.json")]
        info = json.loads((run_dir / "run.json").read_text())
        for name, digest in digests.items():
            if info["data"][name]["sha256"] != digest:
                raise SystemExit(f"nntrain's {name} split differs from the peers' data")
        with open(run_dir / "history.csv") as f:
            rows = list(csv.DictReader(f))
    return Run([float(r["seconds"]) for r in rows], observed, wall, rss,
               float(rows[-1]["val_loss"]) if "val_loss" in rows[-1] else None)


def run_peer(peer: str, workdir: Path, extra: list[str], logdir: Path) -> Run:
    cmd = [sys.executable, str(PEERS), peer, str(workdir), *extra]
    env = {**CHILD_ENV, "KERAS_BACKEND": "jax"}
    t0, wall, rss, text, _ = launch(cmd, env, None, logdir / f"{peer}.log")
    ends, result = {}, None
    for line in text.splitlines():
        if line.startswith("BENCH_EPOCH_END "):
            _, epoch, stamp = line.split()
            ends[int(epoch)] = float(stamp) - t0
        elif line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
    if result is None:
        raise SystemExit(f"{peer}: no result\n{text[-3000:]}")
    return Run(result["epoch_seconds"], ends, wall, rss, result["logs"].get("val_loss"))


# -- the workload's data and model, for the peers ---------------------------------------------
def canonical_metric(name: str) -> str:
    low = name.lower().replace("_", "")
    return "root_mean_squared_error" if low in ("rootmeansquarederror", "rmse") else name


def prepare_workload(wl: Workload, overrides: list[str], workdir: Path) -> tuple[dict, dict]:
    """Load the split with nntrain's loader; write data.npz and spec.json for the peers."""
    from nntrain.build import prepare
    from nntrain.config.entries import entry_args, entry_name
    from nntrain.config.loader import load_config
    from nntrain.data.sources import load_dataset

    path = ROOT / wl.config
    loaded = load_config(path, overrides)
    setup = prepare(loaded)
    start = time.perf_counter()
    ds = load_dataset(loaded.config.data, setup.io, path.parent, loaded.config.seed)
    load_seconds = time.perf_counter() - start
    graph = setup.graph
    if not graph.is_chain or len(graph.outputs) != 1:
        raise SystemExit(f"{wl.name}: only single-input chains are translated")
    (xname,), (yname,) = list(ds.train.x), list(ds.train.y)
    np.savez(workdir / "data.npz", train_x=ds.train.x[xname], train_y=ds.train.y[yname],
             val_x=ds.validation.x[xname], val_y=ds.validation.y[yname])
    c, fit = loaded.config.compile, loaded.config.fit
    loss = c.loss if isinstance(c.loss, str) else entry_name(c.loss)
    opt = entry_args(c.optimizer).model_dump()
    layers = [{"type": n.type, **n.args.model_dump(exclude={"name", "inputs"})}
              for n in graph.nodes]
    callbacks = [{"type": entry_name(e), **entry_args(e).model_dump()} for e in fit.callbacks]
    spec = {"layers": layers, "loss": loss, "optimizer": {"name": entry_name(c.optimizer), **opt},
            "metrics": [canonical_metric(m if isinstance(m, str) else entry_name(m))
                        for m in c.metrics],
            "callbacks": callbacks, "epochs": fit.epochs, "batch_size": fit.batch_size,
            "shuffle": fit.shuffle, "seed": loaded.config.seed}
    (workdir / "spec.json").write_text(json.dumps(spec, indent=1))
    digests = {name: getattr(ds, name).digest() for name in ("train", "validation", "test")
               if getattr(ds, name) is not None}
    facts = {"train": len(ds.train), "validation": len(ds.validation),
             "batch_size": fit.batch_size, "epochs": fit.epochs,
             "steps": -(-len(ds.train) // fit.batch_size), "load_seconds": load_seconds,
             "starts_with_rescaling": layers[0]["type"] == "rescaling"}
    return digests, facts


# -- report ----------------------------------------------------------------------------------
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def steady(run: Run) -> float:
    return statistics.median(run.epoch_seconds[1:] or run.epoch_seconds)


def steady_wall(run: Run) -> float | None:
    ends = [run.epoch_ends[e] for e in sorted(run.epoch_ends)]
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(v, base):
    return "n/a" if v is None or not base else f"{v / base:.2f}"


def table(variants: list[Variant], n_train: int) -> list[str]:
    rows = []
    for v in variants:
        rows.append((v.label, med(steady(r) for r in v.runs), med(steady_wall(r) for r in v.runs),
                     med(r.epoch_ends.get(1) for r in v.runs), med(r.maxrss_mib for r in v.runs),
                     med(r.wall for r in v.runs), med(r.val_loss for r in v.runs)))
    base = rows[0]
    lines = ["| variant | epoch s | x nntrain | epoch-to-epoch wall s | samples/s "
             "| launch to epoch 1 end s | x nntrain | peak RSS MiB | x nntrain | process wall s "
             "| last val_loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, ep, gap, first, rss, wall, val in rows:
        lines.append(
            f"| {label} | {fmt(ep)} | {ratio(ep, base[1])} | {fmt(gap)} "
            f"| {'n/a' if not ep else f'{n_train / ep:,.0f}'} | {fmt(first, 2)} "
            f"| {ratio(first, base[3])} | {fmt(rss, 0)} | {ratio(rss, base[4])} "
            f"| {fmt(wall, 1)} | {fmt(val, 4)} |")
    return lines


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax
    import keras

    try:
        if NNTRAIN_SRC != ROOT:
            raise OSError  # reported by main()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        commit = f"nntrain at {commit}{' + uncommitted changes' if dirty else ''}; " \
            if commit else ""
    except OSError:
        commit = ""
    return (f"{commit}{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, jax {jax.__version__} "
            f"({jax.default_backend()}: {jax.devices()[0].device_kind}), keras {keras.__version__}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", default=None,
                        help="one workload (repeatable); default: all")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: 5; fashion_cnn and compute_mlp 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--source", type=Path, default=None,
                        help="California housing CSV (handson-ml2 layout), for housing_mlp")
    parser.add_argument("--steps-per-execution", type=int, default=64,
                        help="Keras's steps_per_execution for keras_spe and keras_raw (64)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}"
                             " (nntrain is always first: the ratios are to it)")
    parser.add_argument("--full-cnn", action="store_true",
                        help="fashion_cnn on all 55,000 training images even on CPU")
    parser.add_argument("--nntrain-src", type=Path, default=None,
                        help="run the nntrain package found in this folder (e.g. a `git archive` "
                             "snapshot) instead of this checkout's")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw runs here")
    parser.add_argument("--keep", type=Path, default=None, help="keep child logs in this dir")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2 (steady state is epochs 2..N)")

    if args.nntrain_src is not None:
        global NNTRAIN_SRC
        NNTRAIN_SRC = args.nntrain_src.expanduser().resolve()
        if not (NNTRAIN_SRC / "nntrain" / "__main__.py").exists():
            parser.error(f"--nntrain-src: no nntrain package in {NNTRAIN_SRC}")
        sys.path.insert(0, str(NNTRAIN_SRC))
    # nntrain's bytecode, as pip writes it for an installed package: a checkout or snapshot
    # may have none, and under PYTHONDONTWRITEBYTECODE each launch would compile its sources
    # again (0.2-0.6 s on 2 cores), which the peers, imported from installed packages, never pay
    compileall.compile_dir(NNTRAIN_SRC / "nntrain", quiet=1)
    import jax

    cpu = jax.default_backend() == "cpu"
    known = {w.name: w for w in workloads(cpu, args.full_cnn)}
    chosen = args.workload or list(known)
    for name in chosen:
        if name not in known:
            parser.error(f"--workload: unknown {name!r}; one of {', '.join(known)}")
    keys = ["nntrain"] + [k for k in args.variants.split(",") if k and k != "nntrain"]
    spe = args.steps_per_execution
    labels = {"nntrain": "nntrain (cold compile cache)", "nntrain_warm": "nntrain (warm cache)",
              "keras": "Keras 3 (spe=1, default)", "keras_spe": f"Keras 3 (spe={spe})",
              "keras_raw": f"Keras 3 (spe={spe}, uint8 inputs + Rescaling layer)",
              "jax": "plain JAX + optax"}
    for k in keys:
        if k not in labels:
            parser.error(f"--variants: unknown {k!r}")

    out = [f"Machine: {machine()}",
           "nntrain package: " + ("this checkout's nntrain/" if NNTRAIN_SRC == ROOT
                                  else str(NNTRAIN_SRC / "nntrain")),
           f"Command: python bench/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}",
           f"{args.repeats} run(s) per variant, interleaved; medians over runs.", "",
           "- epoch s: each framework's own epoch timer (nntrain: history.csv `seconds`; peers: "
           "epoch begin to end, validation and callbacks included), median of epochs 2..N; "
           "samples/s = train examples / epoch s.",
           "- epoch-to-epoch wall s: time between consecutive epoch ends seen from outside "
           "(nntrain: history.csv's mtime; peers: printed timestamps), median of epochs 2..N; "
           "for nntrain it adds the work after its timer stops (checkpoints/last, history.csv, "
           "metrics.json, run.json, history.png).",
           "- launch to epoch 1 end: from starting the child process (imports, data, compile, "
           "epoch 1). peak RSS: the child's ru_maxrss. x nntrain: this / nntrain (cold cache).",
           "- Keras (spe=1 and spe=K) is fed as Keras users and the textbook feed it: pixels "
           "scaled in NumPy (`X / 255.`, float64, cast to float32 by Keras), no Rescaling layer; "
           "'uint8 inputs + Rescaling layer' gives Keras nntrain's way: the stored uint8 pixels, "
           "scaled inside the compiled model.",
           ""]
    print("\n".join(out), flush=True)
    raw = {}
    scratch = Path(tempfile.mkdtemp(prefix="nntrain-bench-"))
    try:
        for name in chosen:
            wl = known[name]
            base = list(wl.overrides)
            if wl.needs_source:
                if args.source is None:
                    print("\n".join([f"### {name}", "",
                                     "skipped: needs --source path/to/housing.csv", ""]),
                          flush=True)
                    continue
                base.append(f"data.source={args.source.expanduser().resolve()}")
            epochs = args.epochs or wl.epochs
            overrides = [*base, f"fit.epochs={epochs}"]
            workdir = scratch / name
            workdir.mkdir()
            digests, facts = prepare_workload(wl, overrides, workdir)
            wl_path = ROOT / wl.config
            warm_cache = workdir / "warm-cache"
            if "nntrain_warm" in keys:  # fill the cache, untimed
                run_nntrain(wl_path, [*base, "fit.epochs=1"], warm_cache, digests,
                            workdir)
            variants = [Variant(k, labels[k]) for k in keys
                        if k != "keras_raw" or facts["starts_with_rescaling"]]
            for rep in range(args.repeats):
                for v in variants:
                    if v.key in ("nntrain", "nntrain_warm"):
                        cold = workdir / f"cold-cache-{rep}"
                        run = run_nntrain(wl_path, overrides,
                                          cold if v.key == "nntrain" else warm_cache,
                                          digests, workdir)
                        shutil.rmtree(cold, ignore_errors=True)
                    elif v.key == "jax":
                        run = run_peer("jax", workdir, [], workdir)
                    else:
                        run = run_peer("keras", workdir, [
                            "--steps-per-execution", str(1 if v.key == "keras" else spe),
                            "--inputs", "raw" if v.key == "keras_raw" else "scaled"], workdir)
                    v.runs.append(run)
                    print(f"{name} run {rep + 1}/{args.repeats} {v.label}: epochs "
                          f"{' '.join(f'{s:.3f}' for s in run.epoch_seconds)} s, epoch 1 ends "
                          f"{fmt(run.epoch_ends.get(1), 2)} s after launch, "
                          f"{run.maxrss_mib:.0f} MiB, val_loss {fmt(run.val_loss, 4)}",
                          file=sys.stderr, flush=True)
            out = [f"### {name}", "",
                   f"{facts['train']:,} train / {facts['validation']:,} validation examples, "
                   f"batch {facts['batch_size']}, {facts['steps']} steps per epoch, "
                   f"{epochs} epochs. nntrain's loader took {facts['load_seconds']:.2f} s "
                   "in the bench process (nntrain pays it inside its launch-to-epoch-1 time; "
                   "the peers read a prepared .npz)." + (f" {wl.note}." if wl.note else ""), ""]
            out += table(variants, facts["train"]) + [""]
            print("\n".join(out), flush=True)  # each workload as soon as it is done
            raw[name] = {"facts": facts, "variants": {v.key: [r.__dict__ for r in v.runs]
                                                      for v in variants}}
            if args.json:
                args.json.write_text(json.dumps(raw, indent=1))
            if args.keep:
                dest = args.keep / name
                dest.mkdir(parents=True, exist_ok=True)
                for log in workdir.glob("*.log"):
                    shutil.copy(log, dest / log.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
