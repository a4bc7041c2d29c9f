"""The example configs do what the README says they do."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
HOUSING_CSV = ROOT.parent / "shared" / "datasets" / "housing.csv"
REVERSE = ROOT / "examples/reverse_digits/reverse_digits.yaml"


def nntrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nntrain", *args], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def table_rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in output.splitlines() if line.startswith("│")]


def test_every_example_config_validates(tmp_path: Path):
    for config in [*CONFIGS.glob("*.yaml"), ROOT / "examples/custom_layer/gated.yaml", REVERSE]:
        nntrain("validate", str(config), cwd=tmp_path)


def test_xor_predicts_all_four_cases(tmp_path: Path):
    nntrain("fit", str(CONFIGS / "xor.yaml"), "-q", cwd=tmp_path)
    rows = table_rows(nntrain("predict", "runs/xor", "--split", "train", cwd=tmp_path).stdout)
    assert [row[1] for row in rows] == ["0", "1", "1", "0"]  # predicted class
    assert [row[3] for row in rows] == ["0", "1", "1", "0"]  # truth


def test_iris_perceptron_separates_setosa(tmp_path: Path):
    nntrain("fit", str(CONFIGS / "iris.yaml"), "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/iris/*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == 1.0  # setosa is linearly separable


def test_batch_normalization_statistics_survive_the_checkpoint(tmp_path: Path):
    nntrain("fit", str(ROOT / "tests/configs/tiny_cnn.yaml"), "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/tiny_cnn/*"))
    arrays = load_file(str(run / "checkpoints/best/arrays.safetensors"))
    moving_mean = arrays["state/batch_normalization/moving_mean"]
    assert np.abs(moving_mean).max() > 0  # updated from the zeros it started at
    reported = json.loads((run / "metrics.json").read_text())["test"]
    figures = json.loads(nntrain("evaluate", str(run), "--json", cwd=tmp_path).stdout)
    assert figures == pytest.approx(reported, abs=1e-6)


def test_reverse_digits_encoder_decoder_learns_in_two_epochs(tmp_path: Path):
    nntrain("fit", str(REVERSE), "-q", "--epochs", "2", cwd=tmp_path)
    run = next(tmp_path.glob("runs/reverse_digits/*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["last"]["val_accuracy"] > 0.85  # 0.936: each reversed digit


@pytest.mark.slow
def test_reverse_digits_reverses_new_sequences(tmp_path: Path):
    nntrain("fit", str(REVERSE), "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/reverse_digits/*"))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.99
    spec = importlib.util.spec_from_file_location("reverse_digits",
                                                  REVERSE.with_suffix(".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, reversed_digits = module.examples("test", 500)
    np.savez(tmp_path / "queries.npz", **x)
    nntrain("predict", str(run), str(tmp_path / "queries.npz"), "--trust-code", "-o",
            str(tmp_path / "predicted.npz"), cwd=tmp_path)
    predicted = np.load(tmp_path / "predicted.npz")["dense"].argmax(axis=-1)
    assert (predicted == reversed_digits).all(axis=1).mean() >= 0.98  # 0.996: whole sequences


housing = pytest.mark.skipif(not HOUSING_CSV.exists(), reason="needs the housing CSV")


@pytest.mark.slow
@housing
def test_housing_mlp_regression(tmp_path: Path):
    nntrain("fit", str(CONFIGS / "housing_mlp.yaml"), "-q", "--set",
            f"data.source={HOUSING_CSV}", cwd=tmp_path)
    run = next(tmp_path.glob("runs/housing_mlp/*"))
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["root_mean_squared_error"] < 0.58  # Keras 3, same split: 0.53 +- 0.01
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["train"]["examples"] + info["data"]["validation"]["examples"] \
        + info["data"]["test"]["examples"] == 20640 - 207  # rows without bedroom counts dropped


@pytest.mark.slow
@housing
def test_housing_wide_deep_reports_every_output(tmp_path: Path):
    nntrain("fit", str(CONFIGS / "housing_wide_deep.yaml"), "-q", "--set",
            f"data.source={HOUSING_CSV}", cwd=tmp_path)
    figures = json.loads(nntrain("evaluate", "runs/housing_wide_deep", "--json",
                                 cwd=tmp_path).stdout)
    assert set(figures) == {"loss", "output_loss", "aux_output_loss",
                            "output_root_mean_squared_error",
                            "aux_output_root_mean_squared_error"}
    assert figures["loss"] == pytest.approx(
        0.9 * figures["output_loss"] + 0.1 * figures["aux_output_loss"], rel=1e-5)
    assert figures["output_root_mean_squared_error"] < 0.62
    out = tmp_path / "wide_deep.csv"
    nntrain("predict", "runs/housing_wide_deep", "--split", "test", "--limit", "5",
            "--output", str(out), cwd=tmp_path)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "output", "output_true", "aux_output", "aux_output_true"]
    # both heads learn the same target: the split's true value, once per output
    assert all(r["output_true"] == r["aux_output_true"] for r in rows) and len(rows) == 5


@pytest.mark.slow
def test_fashion_cnn_learns_in_two_epochs(tmp_path: Path):
    """The CNN on real Fashion-MNIST, 2 of its 15 epochs (about 80 s on 2 CPU cores): about
    0.9 test accuracy with the config's seed (val_accuracy 0.9014 after epoch 2, test
    accuracy 0.8956)."""
    nntrain("fit", str(CONFIGS / "fashion_cnn.yaml"), "--epochs", "2", "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/fashion_cnn/*"))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.88


@pytest.mark.slow
def test_fashion_transformer_learns_in_two_epochs(tmp_path: Path):
    """The Transformer encoder on real Fashion-MNIST rows, 2 epochs (about 20 s on 2 CPU
    cores): val_accuracy 0.8580 after epoch 2, test accuracy 0.8510."""
    nntrain("fit", str(CONFIGS / "fashion_transformer.yaml"), "--epochs", "2", "-q",
            cwd=tmp_path)
    run = next(tmp_path.glob("runs/fashion_transformer/*"))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.84


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NNTRAIN_LONG_TESTS"),
                    reason="about 9 minutes on 2 CPU cores; set NNTRAIN_LONG_TESTS=1")
def test_fashion_cnn_reaches_91_percent(tmp_path: Path):
    nntrain("fit", str(CONFIGS / "fashion_cnn.yaml"), "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/fashion_cnn/*"))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.91
