"""Run directories: create one per fit, find them again ("latest", a name, a path), read back.

    runs/<name>/<YYYYmmdd-HHMMSS>/   config.yaml run.json summary.txt history.csv
                                     metrics.json history.png checkpoints/ predictions/
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nntrain.errors import UserError
from nntrain.fsutil import atomic_write_json

RUN_FILE = "run.json"


class RunNotFound(UserError):
    pass


@dataclass
class Run:
    path: Path

    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: {e}", "the run directory is damaged") from None

    def info(self) -> dict[str, Any]:
        return self.read_json(RUN_FILE)

    def update_info(self, **changes: Any) -> dict[str, Any]:
        info = {**self.info(), **changes}
        atomic_write_json(self.path / RUN_FILE, info)
        return info


def create_run(runs_root: Path, name: str) -> Run:
    """A new, empty run directory `runs_root/name/<timestamp>` (suffixed if taken)."""
    parent = Path(runs_root) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in range(1000):
        path = parent / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            path.mkdir()
            return Run(path)
        except FileExistsError:
            continue
    raise UserError(f"cannot create a run directory under {parent}")


def _runs_under(folder: Path) -> list[Path]:
    if (folder / RUN_FILE).exists():
        return [folder]
    return sorted((p.parent for p in folder.glob(f"*/{RUN_FILE}")), key=lambda p: p.name)


def all_runs(runs_root: Path) -> list[Path]:
    runs_root = Path(runs_root)
    found = [p.parent for p in runs_root.glob(f"*/*/{RUN_FILE}")]
    return sorted(found, key=lambda p: ((p / RUN_FILE).stat().st_mtime, p.name))


def resolve_run(spec: str, runs_root: Path) -> Run:
    """A run directory, `runs/<name>` (its latest run), a bare run name, or `latest`."""
    runs_root = Path(runs_root)
    if spec == "latest":
        found = all_runs(runs_root)
        if not found:
            raise RunNotFound(f"no runs under {runs_root}", "train one with `nntrain fit CONFIG`")
        return Run(max(found, key=lambda p: p.name))
    for candidate in (Path(spec), runs_root / spec):
        if candidate.is_dir():
            found = _runs_under(candidate)
            if found:
                return Run(found[-1])
    names = sorted({p.parent.name for p in all_runs(runs_root)})
    hint = f"runs under {runs_root}: {', '.join(names)}" if names else \
        "train one with `nntrain fit CONFIG`"
    raise RunNotFound(f"no run found at '{spec}'", hint)
