"""Run directories: create one per fit, find them again ("latest", a name, a path), read back.

    runs/<name>/<YYYYmmdd-HHMMSS>/   config.yaml run.json summary.txt history.csv
                                     metrics.json history.png checkpoints/ predictions/
"""

from __future__ import annotations

import csv
import fcntl
import fnmatch
import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nntrain.errors import UserError
from nntrain.fsutil import atomic_write_json

RUN_FILE = "run.json"
# run.json is read, changed and rewritten by the main thread and the checkpoint writer
# thread alike: one at a time, or one rewrite drops the other's change
_INFO_LOCK = threading.Lock()


_CLAIMS: list[int] = []  # the folder descriptors whose locks this process holds


def release_claims() -> None:
    """Let go of every run this process claimed (training ended, one way or another)."""
    while _CLAIMS:
        os.close(_CLAIMS.pop())


def _damaged(name: str) -> str:
    return f"the run directory is damaged: restore {name} from a copy of the run"


# The fields nntrain reads back from a run's JSON files, with the types it writes: a file
# that parses but holds another type there is damaged, and said so (not a TypeError later).
_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
FIELD_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    RUN_FILE: {
        "name": (str,), "config_source": (str,), "config_dir": (str,), "start": (str,),
        "end": (str, type(None)), "status": (str,), "stop_reason": (str, type(None)),
        "seed": (int, type(None)), "devices": (list,), "data": (dict,),
        "class_names": (list, dict), "epochs_completed": (int, type(None)), "host": (str,),
        "pid": (int,), "placement": (dict,), "versions": (dict,), "seconds_before": _NUMBER,
    },
    "metrics.json": {
        "monitor": (str,), "mode": (str,), "best_epoch": (int, type(None)),
        "best_value": _OPTIONAL_NUMBER, "epochs_completed": (int,), "last": (dict,),
        "test": (dict,), "test_checkpoint": (str,), "evaluations": (list,),
    },
}
# fields holding a mapping or list of mappings (each split's record, each evaluation)
_OF_MAPPINGS = {"data", "evaluations"}


def type_problem(name: str, data: dict[str, Any]) -> str | None:
    """What in a run's JSON file `name` has a type nntrain never writes there, or None."""
    for key, types in FIELD_TYPES.get(name, {}).items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"'{key}' holds {json.dumps(value)[:40]}"
        if key in _OF_MAPPINGS:
            items = value.values() if isinstance(value, dict) else value
            if not all(isinstance(item, dict) for item in items):
                return f"'{key}' holds something other than records"
    return None


class RunNotFound(UserError):
    pass


@dataclass
class Run:
    path: Path
    # the folders above `path` that making it created, deepest first (`discard`)
    new_parents: tuple[Path, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def discard(self) -> None:
        """Remove a new run that trained nothing, and the folders made for it that nothing
        else has come into since."""
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in self.new_parents:
            try:
                folder.rmdir()
            except OSError:  # another run's, or a file the user put there
                break

    def claim(self) -> None:
        """Hold the run for this process's training (an OS lock on its folder, let go by
        `release_claims()` or when the process ends; nothing is written): two processes
        training one run would overwrite each other's checkpoints."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{self.path} is being trained by another process",
                            "let it finish, or stop it (Ctrl-C) and resume it then") from None
        except OSError:  # a file system without locks (some network mounts): train unguarded
            os.close(fd)
            return
        _CLAIMS.append(fd)

    def read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: {e}", _damaged(name)) from None
        if not isinstance(data, dict):
            raise UserError(f"cannot read {path}: not a JSON object", _damaged(name))
        problem = type_problem(name, data)
        if problem:
            raise UserError(f"cannot read {path}: {problem}", _damaged(name))
        return data

    @property
    def is_trial(self) -> bool:
        """A trial of `nntrain tune` (trial-NNNN/ beside its study's lock file): the search,
        not `fit --resume`, trains it again."""
        return self.path.name.startswith("trial-") and (self.path.parent / "study.lock").exists()

    def info(self) -> dict[str, Any]:
        return self.read_json(RUN_FILE)

    def require_config(self) -> None:
        """Refuse, with a clear message, a run whose config.yaml is gone."""
        if not self.config_path.exists():
            raise UserError(f"{self.path} has no config.yaml",
                            "the run directory is incomplete (copied in part?): copy "
                            "config.yaml from the original, or train again")

    # -- lenient read-back, for listing and comparing runs that may be damaged -------------
    @property
    def stamp(self) -> str:
        """The run's own folder name: its start time, `YYYYmmdd-HHMMSS[-N]`."""
        return self.path.name

    @property
    def label(self) -> str:
        """`name/stamp`: short, unique under a runs folder, and accepted as RUN there."""
        return f"{self.name}/{self.stamp}"

    def try_read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON object file of the run: {} when missing, None when damaged (unreadable,
        not JSON, or not an object)."""
        path = self.path / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and type_problem(name, data) is None else None

    def try_read_config(self) -> dict[str, Any] | None:
        """config.yaml as plain data: {} when missing, None when damaged (with the guards a
        CONFIG gets: too deep or too big, an alias bomb, is damaged too)."""
        from nntrain.config.loader import read_yaml

        if not self.config_path.is_file():
            return {}
        try:
            data, _ = read_yaml(self.config_path)
        except UserError:
            return None
        return data if isinstance(data, dict) else None

    def history(self) -> list[dict[str, float]]:
        """history.csv as one dict per epoch ([] when missing). A blank cell is NaN."""
        path = self.path / "history.csv"
        try:
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, csv.Error) as e:
            raise UserError(f"cannot read {path}: {e}", _damaged("history.csv")) from None
        history = []
        for number, row in enumerate(rows, start=2):
            try:
                values = {k: float(v) if v not in ("", None) else math.nan
                          for k, v in row.items() if k is not None}
            except ValueError as e:
                raise UserError(f"{path}:{number}: {e}", _damaged("history.csv")) from None
            if not math.isfinite(values.get("epoch", math.nan)):
                raise UserError(f"{path}:{number}: no epoch number", _damaged("history.csv"))
            values["epoch"] = int(values["epoch"])
            history.append(values)
        return history

    def last_write(self) -> float | None:
        """When the run last recorded anything (seconds since the epoch), or None."""
        times = []
        for name in (RUN_FILE, "history.csv", "metrics.json", "checkpoints/last/checkpoint.json"):
            try:
                times.append((self.path / name).stat().st_mtime)
            except OSError:
                continue
        return max(times) if times else None

    def update_info(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into run.json (atomically; safe from several threads)."""
        with _INFO_LOCK:
            info = {**self.info(), **changes}
            atomic_write_json(self.path / RUN_FILE, info)
        return info


def create_run(runs_root: Path, name: str) -> Run:
    """A new, empty run directory `runs_root/name/<timestamp>` (suffixed if taken)."""
    parent = Path(runs_root) / name
    new_parents = tuple(p for p in (parent, *parent.parents) if not p.exists())
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in range(1000):
        path = parent / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            path.mkdir()
            return Run(path, new_parents)
        except FileExistsError:
            continue
    raise UserError(f"cannot create a run directory under {parent}")


def create_run_at(path: Path) -> Run:
    """A new, empty run directory at a chosen place (a tune trial's); refuses to reuse one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise UserError(f"the run directory {path} exists already",
                        "move it away, or choose another place") from None
    return Run(path)


def _runs_under(folder: Path) -> list[Path]:
    """The runs in `folder` (or `folder` itself), the oldest first."""
    if (folder / RUN_FILE).exists():
        return [folder]
    return sorted((p.parent for p in folder.glob(f"*/{RUN_FILE}")), key=start_order)


def all_runs(runs_root: Path) -> list[Path]:
    """Every run under `runs_root`, the oldest first."""
    return sorted((p.parent for p in Path(runs_root).glob(f"*/*/{RUN_FILE}")), key=start_order)


_STAMPED = re.compile(r"\d{8}-\d{6}(?:-(\d+))?")  # create_run's folder names
_NUMBERED = re.compile(r".*?(\d+)")  # a tune's trial-NNNN


def start_order(path: Path) -> tuple[float, int, str, str]:
    """Sort key for run folders by start: run.json's start time (to the second; with
    run.json damaged, the folder's timestamp or its modification time), then, within a
    second, the folder's number (the same-second suffix, or a tune trial's number). Folder
    names alone cannot order a tune's `trial-NNNN` runs against a later `fit` of the same
    name."""
    stamped, numbered = _STAMPED.fullmatch(path.name), _NUMBERED.fullmatch(path.name)
    try:
        started = parse_time(json.loads((path / RUN_FILE).read_text())["start"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        started = _folder_time(path, stamped)
    number = int(stamped.group(1) or 0) if stamped else int(numbered.group(1)) if numbered \
        else 0
    return (started, number, path.parent.name, path.name)


TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S")


def now_text() -> str:
    """The time now as run.json records it: local, with its offset, to the millisecond."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def parse_time(value: Any) -> datetime | None:
    """A time run.json recorded (runs written before milliseconds were kept too)."""
    if not isinstance(value, str):
        return None
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).astimezone()  # no offset: local time
        except (ValueError, OverflowError, OSError):  # not this format, or year 1 or 9999
            continue
    return None


def _folder_time(path: Path, stamped: re.Match | None) -> float:
    if stamped:  # create_run names folders by the local time they start
        return time.mktime(time.strptime(path.name[:15], "%Y%m%d-%H%M%S"))
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def runs_newest_first(runs_root: Path, pattern: str | None = None) -> list[Run]:
    """Every run under `runs_root`, the newest first; with `pattern`, only the runs whose
    name matches it (a name, or a shell pattern such as `fashion_*`)."""
    found = all_runs(runs_root) if Path(runs_root).is_dir() else []
    if pattern is not None:
        found = [p for p in found if fnmatch.fnmatchcase(p.parent.name, pattern)]
    return [Run(p) for p in reversed(found)]


def _check_runs_root(runs_root: Path) -> None:
    if runs_root.exists() and not runs_root.is_dir():
        raise RunNotFound(f"--runs-dir {runs_root} is a file, not a folder of runs",
                          "give the folder runs are kept in (runs/ by default)")


def resolve_run(spec: str, runs_root: Path) -> Run:
    """A run directory, `runs/<name>` (its latest run), a bare run name, or `latest`."""
    runs_root = Path(runs_root)
    if spec == "latest":
        _check_runs_root(runs_root)
        found = all_runs(runs_root)
        if not found:
            raise RunNotFound(f"no runs under {runs_root}", "train one with `nntrain fit CONFIG`")
        return Run(found[-1])
    for candidate in (Path(spec), runs_root / spec):
        if candidate.is_dir():
            found = _runs_under(candidate)
            if found:
                return Run(found[-1])
            if (candidate / "lr_find.json").exists():
                raise RunNotFound(f"{candidate} is a learning-rate range test (nntrain "
                                  "lr-find), not a training run",
                                  f"its curve is {candidate / 'lr_find.png'}, its figures "
                                  "lr_find.json")
            if (candidate / "config.yaml").exists() or (candidate / "checkpoints").is_dir():
                raise RunNotFound(f"{candidate} looks like a run directory but has no {RUN_FILE}",
                                  "the run directory is incomplete (copied in part?): copy "
                                  f"{RUN_FILE} from the original, or train again")
    _check_runs_root(runs_root)
    names = sorted({p.parent.name for p in all_runs(runs_root)})
    hint = f"runs under {runs_root}: {', '.join(names)}" if names else \
        "train one with `nntrain fit CONFIG`"
    raise RunNotFound(f"no run found at '{spec}'", hint)
