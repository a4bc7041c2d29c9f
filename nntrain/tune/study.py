"""The optuna side: storage, study, sampler, pruner, and handing out trials to workers.

Trial bookkeeping, so that a search can be stopped, continued and shared:
- a trial *counts* towards `max_trials` when it is complete, pruned, running, waiting, or
  failed for a reason of its own (a non-finite loss, a config the values make invalid: user
  attr `failure`);
- a trial that failed because its process stopped (Ctrl-C, SIGTERM, a kill) does not count,
  and its values are queued again (user attr `retry_of`), so the next `nntrain tune` of the
  same config runs it from the start;
- a running trial whose process is gone is found by its pid (same host) or, on any host, by
  optuna's heartbeat going stale.
Handing out the next trial (count, then `ask`) happens under a file lock in the tune
directory, so local workers never overshoot `max_trials`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nntrain.errors import UserError
from nntrain.tune.space import Dimension, SearchConfig, grid_size, to_params

HEARTBEAT_SECONDS = 10  # a live worker's trials are touched this often ...
GRACE_SECONDS = 120  # ... and count as abandoned after this long without a touch
SQLITE_TIMEOUT_SECONDS = 60  # several local workers share one SQLite file: wait on locks

optuna.logging.set_verbosity(optuna.logging.WARNING)  # nntrain prints its own trial lines


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def printable(url: str, text: str | None = None) -> str:
    """A storage URL (or a `text` that may quote it) fit to print: its password as ***."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL nntrain can split: print nothing of its credentials
        password = None
    text = url if text is None else text
    return text.replace(f":{password}@", ":***@") if password else text


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats. SQLite waits up to a minute for another worker's
    write instead of failing at once ("database is locked")."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                              grace_period=GRACE_SECONDS, **kwargs)
        except (ImportError, ValueError) as e:
            raise UserError(printable(url, f"--storage {url}: {e}"), "give a database URL "
                            "optuna accepts, "
                            "e.g. sqlite:///study.db or postgresql://user@host/db") from None
        except Exception as e:  # sqlalchemy's errors: unreachable server, bad credentials
            if url.startswith("sqlite:///"):  # a local file: damaged, or not a database
                path = Path(url.removeprefix("sqlite:///"))
                hint = f"{path} is damaged or not an SQLite database: restore it from a " \
                    "copy, or to start the search afresh delete it and the trial-* folders " \
                    f"beside it in {path.parent}" if path.is_file() else \
                    f"{path.parent} is not a folder that exists: create it, or give another " \
                    "path" if not path.parent.is_dir() else \
                    f"{path} is not a file nntrain can create there: give another path"
                raise UserError(f"cannot open the study storage {path}: {type(e).__name__}: "
                                f"{str(e).splitlines()[0]}", hint) from None
            raise UserError(printable(url, f"cannot open the study storage {url}: "
                                           f"{type(e).__name__}: {e}"),
                            "check the URL, and that the database server is reachable") from None


def has_study(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in {s.study_name for s in optuna.get_all_study_summaries(storage)}


def open_study(storage: optuna.storages.BaseStorage, name: str, direction: str,
               fingerprint: str, dims: list[Dimension], search: SearchConfig,
               seed: int, worker: int, max_epochs: int,
               current_form: Callable[[str], str] = str) -> tuple[optuna.Study, bool]:
    """The study named after the config: created (its first trial the config's defaults,
    except in a grid search), or loaded and checked to be the same search. Returns
    (study, created)."""
    created = not has_study(storage, name)
    if created:
        study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                    direction="maximize" if direction == "max" else "minimize")
        study.set_user_attr("config", fingerprint)
        # a worker elsewhere (a shared --storage) may have created it a moment before
        if search.algorithm != "grid" and not study.get_trials(deepcopy=False):
            from nntrain.tune.space import defaults

            study.enqueue_trial(to_params(dims, defaults(dims)), user_attrs={"defaults": True})
    else:
        study = optuna.load_study(study_name=name, storage=storage)
        saved = study.user_attrs.get("config")
        saved = None if saved is None else current_form(saved)
        if saved is not None and saved != fingerprint:
            raise SearchChanged(saved, fingerprint)
    study.sampler = make_sampler(search, dims, _seed(seed, created and worker == 0))
    study.pruner = make_pruner(search, max_epochs)
    return study, created


class SearchChanged(UserError):
    def __init__(self, saved: str, given: str) -> None:
        import difflib

        diff = "".join(difflib.unified_diff(saved.splitlines(True), given.splitlines(True),
                                            "the study's config", "this config"))
        super().__init__(f"the study holds a different search:\n{diff}", "")
        self.saved, self.given = saved, given


def _seed(seed: int, creator: bool) -> int:
    """The sampler's seed: the config's for the command that creates the study (a search
    run again afresh draws the same values); any other, a continued study, another worker
    or another command on the same study (started at the same moment, or on another
    machine), draws from fresh entropy, so no two draw the same values."""
    import numpy as np

    if creator:
        return seed
    return int(np.random.SeedSequence([seed, np.random.SeedSequence().entropy])
               .generate_state(1)[0])


class _Grid(optuna.samplers.BruteForceSampler):
    """Optuna's exhaustive sampler, which walks conditional spaces too. It ends a study from
    inside `tell`, which only `study.optimize` allows; nntrain stops at the grid's size
    instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(search: SearchConfig, dims: list[Dimension],
                 seed: int) -> optuna.samplers.BaseSampler:
    algorithm = search.algorithm
    startup = search.startup_trials or max(1, min(10, search.max_trials // 2))
    if algorithm in ("random", "hyperband"):  # Keras Tuner's Hyperband draws at random too
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _Grid(seed=seed)
    if algorithm == "gp":
        check_algorithm(search)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def check_algorithm(search: SearchConfig) -> None:
    """The Gaussian-process sampler needs torch and scipy: say so before anything starts."""
    if search.algorithm != "gp":
        return
    missing = [m for m in ("torch", "scipy") if not _importable(m)]
    if missing:
        raise UserError(f"search.algorithm gp (Gaussian process) needs "
                        f"{' and '.join(missing)} (not installed)",
                        f"pip install {' '.join(missing)}, or use algorithm: bayesian (TPE)")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def make_pruner(search: SearchConfig, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    name = search.pruner_name()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=search.hyperband.min_epochs, max_resource=max_epochs or "auto",
            reduction_factor=search.hyperband.reduction_factor)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3,
                                           n_warmup_steps=search.hyperband.min_epochs - 1)
    return optuna.pruners.NopPruner()


def trial_limit(search: SearchConfig, dims: list[Dimension]) -> int:
    """max_trials, or the grid's size when that is smaller."""
    if search.algorithm == "grid":
        return min(search.max_trials, grid_size(dims))
    return search.max_trials


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial takes one of the max_trials places (see the module's docstring)."""
    if trial.state == TrialState.FAIL:
        return "failure" in trial.user_attrs
    return True


def used(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One local worker at a time: count the trials, then ask for one."""
    with open(folder / "study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def next_trial(study: optuna.Study, limit: int, folder: Path) -> optuna.Trial | None:
    """The next trial to run, or None when `limit` trials are done or under way."""
    with locked(folder):
        reap(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and sum(1 for t in trials if counts(t)) >= limit:
            return None
        with warnings.catch_warnings():  # nntrain runs the heartbeat itself (see `heartbeat`)
            warnings.filterwarnings("ignore", "Heartbeat of storage")
            trial = study.ask()
        # a worker killed before these two lines leaves a trial of no one's: `_unclaimed`
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return trial


def reap(study: optuna.Study) -> list[int]:
    """Fail the running trials whose process is gone, and queue their values again."""
    host = socket.gethostname()
    running = {t.number: t for t in study.get_trials(deepcopy=False,
                                                      states=(TrialState.RUNNING,))}
    dead = [t for t in running.values()
            if t.user_attrs.get("host") == host and not _alive(t.user_attrs.get("pid"))
            or _unclaimed(t)]
    for trial in dead:
        with contextlib.suppress(RuntimeError, ValueError):  # another worker got there first
            study.tell(trial.number, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other hosts: their heartbeat stopped
    now = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    # failed by its own worker (a failure, or interrupted and queued again): not ours
    gone = [running[n] for n in running if n in now and not {"failure", "interrupted"}
            & set(now[n].user_attrs)]
    for trial in gone:
        retry(study, trial)
    return [t.number for t in gone]


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> None:
    """Queue an interrupted trial's values for the next worker."""
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def _unclaimed(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial its worker never said it owns (killed between asking for it and naming
    itself, milliseconds) and never beat for: abandoned once the grace period is past."""
    started = trial.datetime_start
    return "host" not in trial.user_attrs and started is not None and \
        (datetime.datetime.now() - started).total_seconds() > GRACE_SECONDS


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # not ours to judge: the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def heartbeat(study: optuna.Study, trial: optuna.Trial):
    """Touch the trial while it runs, as `study.optimize` does, so other workers can tell a
    live trial from an abandoned one."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)
