"""Training data over `data.device_memory` streams from memory-mapped .npy files in chunks,
with the same results as the in-memory path for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clirunner import nntrain
from runfiles import history_rows
from safetensors.numpy import load_file

from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.data.sources import load_dataset
from nntrain.data.stream import memory_budget, parse_size

MLP = """
name: streamed
seed: 5
data:
  train: arrays
  validation: {last: 100}
  test: {last: 60}
model:
  input: [6, 6, 1]
  layers:
%s
compile:
  loss: sparse_categorical_crossentropy
  optimizer: adam
  metrics: [accuracy]
fit:
  epochs: 3
  batch_size: 16
"""
DENSE = """    - flatten
    - dense: {units: 12, activation: relu}
    - dropout: 0.25
    - dense: {units: 3, activation: softmax}"""
CONV = """    - conv2d: {filters: 3, kernel_size: 3, activation: relu}
    - batch_normalization
    - flatten
    - dense: {units: 3, activation: softmax}"""


def _config(tmp_path: Path, layers: str) -> Path:
    folder = tmp_path / "arrays"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 650).astype(np.int32)
    x = rng.normal(size=(650, 6, 6, 1)).astype(np.float32) + y[:, None, None, None]
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    config = tmp_path / "streamed.yaml"
    config.write_text(MLP % layers)
    return config


def _fit(config: Path, runs: Path, *sets: str) -> tuple[Path, str]:
    args = ["fit", str(config), "--runs-dir", str(runs)]
    for s in sets:
        args += ["--set", s]
    result = nntrain(*args)
    assert result.exit_code == 0, result.output
    return next(runs.glob("*/*")), result.output


@pytest.mark.parametrize("layers", [DENSE, CONV], ids=["mlp", "cnn"])
def test_streaming_matches_the_in_memory_path(tmp_path: Path, layers: str):
    config = _config(tmp_path, layers)
    whole, whole_out = _fit(config, tmp_path / "whole")
    # 490 training rows of 148 bytes: a 10 kB budget streams chunks of 2 steps (32 rows)
    streamed, out = _fit(config, tmp_path / "streamed", "data.device_memory=10kB")
    assert "Streaming" not in whole_out and "Streaming" in out
    assert history_rows(streamed) == history_rows(whole)
    for checkpoint in ("last", "best"):
        a = load_file(str(whole / "checkpoints" / checkpoint / "arrays.safetensors"))
        b = load_file(str(streamed / "checkpoints" / checkpoint / "arrays.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
    assert (streamed / "metrics.json").read_text().count("test") >= 1


def test_npy_folders_are_memory_mapped_and_splits_stay_mapped(tmp_path: Path):
    config = _config(tmp_path, DENSE)
    loaded = load_config(config, [])
    setup = prepare(loaded)
    data = load_dataset(loaded.config.data, setup.io, tmp_path, 0)
    assert (len(data.train), len(data.validation), len(data.test)) == (490, 100, 60)
    for part in (data.train, data.validation, data.test):
        assert isinstance(part.x["input"], np.memmap)


def test_sizes_and_budgets():
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size(4096) == 4096

    class Device:
        def memory_stats(self):
            return {"bytes_limit": 8 * 2**30}

    assert memory_budget("auto", Device()) == 4 * 2**30
    assert memory_budget("100MB", Device()) == 10**8


@pytest.mark.parametrize("value", ["lots", "-5", "12 parsecs"])
def test_a_bad_budget_is_a_config_error(tmp_path: Path, value: str):
    config = _config(tmp_path, DENSE)
    result = nntrain("fit", str(config), "--set", f"data.device_memory={value}", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "data.device_memory" in result.output
    assert not (tmp_path / "runs").exists()


def test_an_empty_npy_folder_is_a_data_error(tmp_path: Path):
    config = _config(tmp_path, DENSE)
    for f in (tmp_path / "arrays").iterdir():
        f.unlink()
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "no .npy files in this folder" in result.output


def test_a_file_in_an_npy_folder_that_is_no_npy_is_named_without_numpys_pickle_advice(
        tmp_path: Path):
    config = _config(tmp_path, DENSE)
    (tmp_path / "arrays" / "x.npy").write_text("pixel,values\n1,2\n")
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "x.npy: not an .npy or .npz file numpy wrote" in " ".join(result.output.split())
    assert "allow_pickle" not in result.output and "Traceback" not in result.output
