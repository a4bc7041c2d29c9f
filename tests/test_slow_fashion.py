"""The textbook's Fashion-MNIST MLP on the real data, end to end (about a minute on 2 cores)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def nntrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nntrain", *args], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_fashion_mlp_reaches_the_textbook_accuracy(tmp_path: Path):
    nntrain("fit", str(ROOT / "configs" / "fashion_mlp.yaml"), "-q", cwd=tmp_path)
    run = next(tmp_path.glob("runs/fashion_mlp/*"))
    rows = list(csv.DictReader((run / "history.csv").open()))
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(rows) == 30
    assert float(rows[-1]["val_accuracy"]) >= 0.885  # textbook 0.8894
    assert metrics["test"]["accuracy"] >= 0.880  # textbook 0.8864

    figures = json.loads(nntrain("evaluate", "runs/fashion_mlp", "--json",
                                 cwd=tmp_path).stdout.splitlines()[-1])
    for name in ("loss", "accuracy"):
        assert round(figures[name], 4) == round(metrics["test"][name], 4)

    table = nntrain("predict", "runs/fashion_mlp", "--split", "test", "--limit", "3",
                    cwd=tmp_path).stdout
    predicted = [line.split("│")[2].strip() for line in table.splitlines()
                 if line.startswith("│")]
    assert predicted == ["Ankle boot", "Pullover", "Trouser"]
