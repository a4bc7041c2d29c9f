"""Side-by-side test figures of nntrain and Keras 3 (JAX backend) on configs/fashion_mlp_l2.yaml,
the textbook's l2-regularized Fashion-MNIST MLP (Hands-On ML ch. 11).

For every seed, nntrain trains the config through its CLI in a subprocess, and Keras trains
the same model (kernel_regularizer l2(0.01), ELU, He normal, Nadam, early stopping with
patience 3) in this process, on the same split: nntrain's loader's last 5,000 training images
for validation, the 10,000 test images for the test figures.

    pip install keras            # dev-only dependency, Keras 3
    python bench/compare_keras_fashion_l2.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

from nntrain.data.fashion_mnist import load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fashion_mlp_l2.yaml"


def run_nntrain(seed: int, runs_dir: Path) -> tuple[float, float]:
    subprocess.run([sys.executable, "-m", "nntrain", "fit", str(CONFIG), "-q", "--set",
                    f"seed={seed}", "--runs-dir", str(runs_dir / str(seed))], check=True)
    run, = (runs_dir / str(seed)).glob("*/*")
    test = json.loads((run / "metrics.json").read_text())["test"]
    return test["loss"], test["accuracy"]


def run_keras(seed: int) -> tuple[float, float]:
    import keras

    (x, y), (x_test, y_test) = load()["train"], load()["test"]
    keras.utils.set_random_seed(seed)

    def dense(units: int, activation: str) -> keras.layers.Dense:
        initializer = "he_normal" if activation == "elu" else "glorot_uniform"
        return keras.layers.Dense(units, activation=activation,
                                  kernel_initializer=initializer,
                                  kernel_regularizer=keras.regularizers.l2(0.01))

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), dense(300, "elu"), dense(100, "elu"),
                              dense(10, "softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="nadam",
                  metrics=["accuracy"])
    model.fit(x[:55000], y[:55000], epochs=10, validation_data=(x[55000:], y[55000:]),
              verbose=0, callbacks=[keras.callbacks.EarlyStopping(
                  patience=3, restore_best_weights=True)])
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return loss, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per framework (default 3)")
    args = parser.parse_args()
    seeds = [42, *range(1, args.seeds)]
    rows = {"nntrain": [], "Keras 3": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows["nntrain"].append(run_nntrain(seed, Path(tmp)))
            rows["Keras 3"].append(run_keras(seed))
            print(f"seed {seed}: nntrain {rows['nntrain'][-1]}, Keras {rows['Keras 3'][-1]}",
                  flush=True)
    print(f"\n| framework | test loss | test accuracy |  ({len(seeds)} seeds, mean ± std)")
    print("| --- | --- | --- |")
    for name, results in rows.items():
        losses, accuracies = zip(*results, strict=True)
        spread = (lambda v: statistics.stdev(v)) if len(seeds) > 1 else (lambda v: 0.0)
        print(f"| {name} | {statistics.mean(losses):.4f} ± {spread(losses):.4f} | "
              f"{statistics.mean(accuracies):.4f} ± {spread(accuracies):.4f} |")


if __name__ == "__main__":
    main()
