"""Reading a run directory back in tests: the one run under a folder, its history rows."""

from __future__ import annotations

import csv
from pathlib import Path


def only_run(folder: Path) -> Path:
    """The single run directory under `folder/runs/`."""
    runs = list(folder.glob("runs/*/*"))
    assert len(runs) == 1, runs
    return runs[0]


def history_rows(run: Path) -> list[dict[str, str]]:
    """history.csv as text rows without the timing column, for exact comparisons."""
    with (run / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
