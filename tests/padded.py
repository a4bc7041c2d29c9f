"""A padded-sequence task for the layers that take mask_zero's mask: variable-length
sequences of ids 1-9, padded with 0 to 8 steps; the label says whether id 7 is anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from clirunner import nntrain


def fit_token_seven_task(tmp_path: Path, layers: list, *, learning_rate: float,
                         epochs: int) -> float:
    """Fits `embedding(mask_zero) -> layers -> dense(1, sigmoid)` from the CLI; returns the
    test accuracy."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 600)
    ids = rng.integers(1, 10, (600, 8)) * (np.arange(8) < lengths[:, None])
    np.savez(tmp_path / "seq.npz", x=ids.astype(np.int32), y=(ids == 7).any(1).astype(np.int32))
    config = {"name": "padded", "data": {"train": "seq.npz", "validation": {"last": 100},
                                         "test": {"last": 100}},
              "model": {"inputs": {"x": {"shape": [8], "dtype": "int32"}},
                        "layers": [{"embedding": {"inputs": "x", "input_dim": 10,
                                                  "output_dim": 16, "mask_zero": True}},
                                   *layers, {"dense": {"units": 1, "activation": "sigmoid",
                                                       "name": "y"}}]},
              "compile": {"loss": "binary_crossentropy",
                          "optimizer": {"adam": learning_rate}, "metrics": ["accuracy"]},
              "fit": {"epochs": epochs, "batch_size": 32}}
    (tmp_path / "padded.yaml").write_text(yaml.safe_dump(config))
    result = nntrain("fit", str(tmp_path / "padded.yaml"), "-q", "--runs-dir",
                     str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "padded").iterdir()
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
