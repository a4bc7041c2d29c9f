"""What each CLI command does, apart from parsing arguments and printing errors."""

from __future__ import annotations

import atexit
import contextlib
import difflib
import functools
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

import nntrain
from nntrain.config.loader import LoadedConfig, load_config
from nntrain.consoles import make_console, shell
from nntrain.custom import require_trust
from nntrain.data.stream import examples
from nntrain.errors import (
    DataModelMismatch,
    TrainingFailed,
    UserCodeError,
    UserError,
    out_of_memory,
)
from nntrain.fsutil import DiskFull, atomic_write_json, atomic_write_text, exclusive
from nntrain.interrupts import deferred_interrupts, stop_on_signals
from nntrain.runs import (
    Run,
    create_run,
    create_run_at,
    now_text,
    release_claims,
    resolve_run,
)

if TYPE_CHECKING:  # for the hints: each command imports what it needs when it runs
    from nntrain.build import Setup
    from nntrain.data.sources import Dataset


def configure_jax() -> None:
    """Persistent compilation cache on by default: a second run skips most compile time."""
    import jax

    from nntrain.data.fashion_mnist import cache_root

    cache = os.environ.get("NNTRAIN_JAX_CACHE") or str(cache_root() / "jax-cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    # small CPU programs compile in under the 1 s default and would never be cached
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def _config_data(loaded: LoadedConfig) -> dict[str, Any]:
    # the search section played no part in a run (nntrain tune strips it from trials too)
    data = loaded.config.model_dump(mode="json", exclude_none=True, exclude={"search"})
    # settings that play no part with this data source would only mislead a reader
    source = data["data"]
    if source.get("dataset") != "synthetic":
        del source["synthetic"]
    if "dataset" in source or "generator" in source:  # x, y name arrays in the user's files
        del source["x"], source["y"]
    return data


def dump_config(loaded: LoadedConfig) -> str:
    return yaml.safe_dump(_config_data(loaded), sort_keys=False, default_flow_style=None,
                          width=100)


def prepare_setup(loaded: LoadedConfig, training: bool = True) -> Setup:
    """The config's model, losses, metrics and optimizer, checked against one another."""
    from nntrain.build import prepare

    return prepare(loaded, training)


def load_data(setup: Setup, base_dir: Path, console: Console, quiet: bool,
              split: str | None = None, trained: bool = False) -> Dataset:
    """The config's data; with `split` (evaluate, predict), the other held-out splits read
    from files of their own are left unread: a moved validation file does not stop a test
    evaluation (splits cut from the training rows are cut as in training). For a run that
    has trained (`trained`, or a `split` to read back), data that does not fit the model is
    said to have changed, not the model to be changed."""
    from nntrain.data.sources import load_dataset

    config = setup.loaded.config
    if split is not None:
        unread = {name: None for name in ("validation", "test") if name != split
                  and getattr(config.data, name) is not None
                  and getattr(config.data, name).path is not None}
        config = config.model_copy(update={"data": config.data.model_copy(update=unread)})
    status = console.status("Loading data...") if not quiet and console.is_terminal else None
    if status:
        status.start()
    try:
        return load_dataset(config.data, setup.io, base_dir, config.seed, config.fit.batch_size)
    except DataModelMismatch as e:
        if split is None and not trained:
            raise
        raise DataModelMismatch(e.message, "the run's model was trained on data of another "
                                "form: the data files changed since it trained (a new "
                                "category adds a column); give it data like its training "
                                "data") from None
    finally:
        if status:
            status.stop()


# -- validate / summary ------------------------------------------------------------------------
def validate(config_path: Path, overrides: list[str], console: Console) -> None:
    loaded = load_config(config_path, overrides)
    if loaded.config.search is not None:  # its paths and values, as `nntrain tune` checks them
        from nntrain.tune.command import check_search, resolve_objective

        _, positions, override_paths, _ = check_search(loaded, overrides)
    setup = prepare_setup(loaded)
    if loaded.config.search is not None:  # and the figure the trials are ranked by
        resolve_objective(loaded, setup, positions, override_paths)
    _check_data_files(loaded)
    model = setup.model
    console.print(
        f"[green]✓[/] {config_path} is valid: model '{loaded.config.name}', "
        f"{_plural(len(setup.graph.layer_nodes), 'layer')}, "
        f"{model.trainable_count + model.non_trainable_count:,}"
        f" parameters, outputs {', '.join(setup.graph.outputs)}", highlight=False,
        soft_wrap=True)


def _check_data_files(loaded: LoadedConfig) -> None:
    """The data files a config names exist (they are not read: validate loads no data)."""
    from nntrain.data.sources import resolve_path

    data, base_dir = loaded.config.data, loaded.source.resolve().parent
    named = [("data.train", data.train), ("data.source", data.source)] + [
        (f"data.{split}.path", getattr(data, split).path)
        for split in ("validation", "test") if getattr(data, split) is not None]
    for key, path in named:
        if path is not None:
            resolve_path(path, base_dir, key)


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def summary(config_path: Path, overrides: list[str], console: Console) -> None:
    from nntrain.summary import print_summary

    loaded = load_config(config_path, overrides)
    setup = prepare_setup(loaded)
    print_summary(setup.model, console, title=f'Model: "{loaded.config.name}"')


# -- fit -------------------------------------------------------------------------------------
def _releasing_claims(command: Callable[..., int]) -> Callable[..., int]:
    """The run a command trains is held (`Run.claim`) until the command ends, however it
    ends: a traceback kept alive would otherwise hold it in a process that goes on (tune)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        finally:
            release_claims()

    return run


@_releasing_claims
def fit(config_path: Path | None, overrides: list[str], runs_dir: Path, console: Console, *,
        resume: str | None = None, quiet: bool = False, trust_code: bool = False,
        log_format: str = "rich", cluster: dict[str, Any] | None = None,
        loaded: LoadedConfig | None = None, run_path: Path | None = None,
        callbacks: Sequence[Any] = (), say_stops: bool = True) -> int:
    """Train. With `log_format="json"`, stdout carries only JSON lines (one per epoch, then
    an `{"event": "end", ...}` object); messages for people go to stderr. `cluster` (the
    arguments of `jax.distributed.initialize`, {} to detect them) joins a multi-process run.

    `nntrain tune` runs each trial through here: `loaded` is the trial's config (instead of
    reading `config_path`), `run_path` the trial's run directory (instead of a new one under
    `runs_dir`), and `callbacks` are added to the config's (the trial's reporter); a worker
    process of a search passes `say_stops=False`: its search reports the stopped trial."""
    # from JAX's import on, a Ctrl-C can land in its garbage-collector callbacks and be lost
    # (see Interrupts): noted until the run's own handling takes over
    with deferred_interrupts() as early:
        from nntrain.train.fit import Fitter

        began = time.perf_counter()
        as_json = log_format == "json"
        if as_json:
            console = make_console(stderr=True)
        run: Run | None = None
        if resume is not None:
            run = resolve_run(resume, runs_dir)
            run.require_config()
            if run.is_trial:  # its checkpoint also holds the search's reporting callback
                raise UserError(f"{run.path} is a trial of the search in {run.path.parent}: the "
                                "search trains it, not fit --resume",
                                "run the search's `nntrain tune CONFIG` command again: it "
                                "trains an interrupted or killed trial anew (a pruned or "
                                "finished one is a result, kept as it is); to train these "
                                "values further, fit the trial's config.yaml")
            info = run.info()
            reason = info.get("stop_reason") or ""
            if info.get("status") == "stopped" and early.signum is None and reason.startswith(
                    ("early stopping", "a callback stopped")):  # it ended, it was not cut short
                console.print(f"{run.path} ended by {reason}: nothing to resume (--resume continues"
                              " an interrupted run; to train on, train the config again, e.g. "
                              "with more patience)", highlight=False, soft_wrap=True)
                return 0
            base_dir = Path(info.get("config_dir", run.path))
            loaded = load_config(run.config_path, overrides, search_dir=base_dir, saved=True)
            if config_path is None:  # a CONFIG given with --resume is the user's own code
                require_trust(loaded.config, trust_code, run.path)
            given = _refuse_changed_config(
                run, load_config(run.config_path, search_dir=base_dir, saved=True),
                config_path, overrides, loaded).config.fit
            epochs = given.epochs
            if config_path is not None and epochs != loaded.config.fit.epochs and not quiet:
                console.print(f"{run.path} was started with fit.epochs: "
                              f"{loaded.config.fit.epochs}; {config_path} trains it to epoch "
                              f"{epochs}", highlight=False, soft_wrap=True)
            if (epochs, given.devices) != (loaded.config.fit.epochs, loaded.config.fit.devices):
                # the CONFIG's: the two things it may change
                loaded = load_config(run.config_path, [
                    *overrides, f"fit.epochs={epochs}",
                    f"fit.devices={'null' if given.devices is None else given.devices}"],
                    search_dir=base_dir, saved=True)
            done = info.get("epochs_completed") or 0
            if epochs < done:
                raise UserError(f"{run.path} has trained {done} epochs; fit.epochs {epochs} would "
                                "be fewer", f"to train longer give --epochs N with N > {done}; its "
                                "weights are read back with nntrain evaluate and predict")
            tested = "test" in run.read_json("metrics.json") or "test" not in info.get("data", {})
            if epochs == done and info.get("status") == "completed" and tested and \
                    early.signum is None:  # whole: its record stays as it is (a Ctrl-C after
                # the last epoch leaves the test to do)
                console.print(f"{run.path} has trained all {epochs} epochs: nothing to train (to "
                              f"train longer: --epochs N, N > {epochs})", highlight=False,
                              soft_wrap=True)
                return 0
        else:
            if config_path is None and loaded is None:
                raise UserError("fit needs a CONFIG file (or --resume RUN)",
                                "e.g. nntrain fit configs/fashion_mlp.yaml")
            loaded = loaded or load_config(config_path, overrides)
            base_dir = loaded.source.resolve().parent
    if early.signum is not None:  # while JAX was imported or the config read: nothing made
        if say_stops:
            console.print("[yellow]Interrupted before training started[/]: " + (
                "nothing was kept" if run is None else f"{run.path} is as it was"),
                soft_wrap=True)
        return 128 + early.signum
    created: Run | None = None  # a new run's folder: removed if setting up fails
    try:
        with deferred_interrupts() as interrupts:
            # from here Ctrl-C is noted, and acted on where stopping leaves things whole: in
            # JAX's import, a KeyboardInterrupt can be swallowed by its gc callback
            configure_jax()
            if cluster is not None:
                from nntrain.train.devices import initialize_distributed

                initialize_distributed(**cluster)
            from nntrain.train.devices import Placement

            placement = Placement.from_config(loaded)
            earlier = 0.0  # seconds a resumed run trained in its earlier sessions
            if run is not None and placement.is_primary:  # the others train from copies
                run.claim()  # held while this process trains the run
                from nntrain.runs_view import view_run

                # claimed: any process that trained it is gone, and its last write ended its
                # session
                earlier = view_run(run).duration(ended=True) or 0.0
            if not placement.is_primary:
                # process 0 writes the run; the others train alongside it and keep quiet
                quiet, runs_dir = True, Path(tempfile.mkdtemp(prefix="nntrain-replica-"))
                atexit.register(shutil.rmtree, runs_dir, True)
                console = make_console(quiet=True)
                if run is not None:
                    # resume from a private copy: process 0 goes on writing the original. It
                    # cannot write a new checkpoint before this copy is done: that needs an
                    # epoch's collectives, with this process taking part.
                    run = Run(Path(shutil.copytree(run.path, runs_dir / run.path.name)))
            setup = prepare_setup(loaded)
            dataset = load_data(setup, base_dir, console, quiet, trained=resume is not None)
            interrupts.check()
            from nntrain.build import (
                check_generated_validation,
                class_weight_vector,
                output_class_names,
            )

            check_generated_validation(setup, dataset)
            class_weight_vector(setup, output_class_names(setup, dataset))  # classes by name
            if run is not None and not quiet:
                warn_if_data_changed(run, dataset, console)
            if run is None:  # only now, with config, model and data all checked, touch the disk
                run = create_run(runs_dir, loaded.config.name) if run_path is None else \
                    create_run_at(run_path)
                created = run if run_path is None else None  # tune keeps failed trials
                if placement.is_primary:
                    run.claim()
                atomic_write_text(run.config_path, dump_config(loaded))
                from nntrain.summary import summary_text

                atomic_write_text(run.path / "summary.txt",
                                  summary_text(setup.model, f'Model: "{loaded.config.name}"'))
                # running from here: a kill while the programs are made lists as killed
                run.update_info(**_run_record(loaded, dataset, base_dir), status="running",
                                host=socket.gethostname(), pid=os.getpid())
            fitter = Fitter(setup, dataset, run, console, quiet, log_format=log_format,
                            placement=placement, compile_ahead=resume is None)
            if fitter.streaming and not quiet:
                _say_streaming(fitter, loaded, dataset, console)
            fitter.callbacks.extend(callbacks)
            interrupts.check()
            initial_epoch = _restore(fitter, run, console) if resume is not None else 0
            if resume is not None and run.config_path.read_text() != dump_config(loaded):
                atomic_write_text(run.config_path, dump_config(loaded))  # trained longer: say so
            interrupts.check()  # the last place where stopping leaves the run as it was
            # a session's time adds to the earlier ones' (`runs` shows the sum)
            import jax  # imported by configure_jax

            if resume is not None and dataset.encoding is not None:  # the data trained on now
                run.update_info(table_encoding=dataset.encoding)
            run.update_info(status="running", command=_command_line(),
                            resumed=resume is not None,
                            end=None, stop_reason=None, placement=placement.describe(),
                            devices=[str(d) for d in jax.devices()],  # this session's machine
                            session_start=now_text(), seconds_before=round(earlier, 1),
                            host=socket.gethostname(), pid=os.getpid())  # `runs`: alive?
            if fitter.ended and not quiet:  # stopped in its last moments (a kill)
                console.print(f"{run.path}: training ended by {fitter.ended}; finishing the "
                              "run (no more epochs)", highlight=False, soft_wrap=True)
            elif not quiet:
                _say_start(run, loaded, dataset, resume is not None, initial_epoch, console)
    except BaseException as e:
        if created is not None:  # nothing trained yet: leave nothing half-made behind
            created.discard()
        if isinstance(e, KeyboardInterrupt):
            if say_stops:
                console.print("[yellow]Interrupted before training started[/]" + (
                    ": nothing was kept" if created is not None else ""), soft_wrap=True)
            return 128 + (interrupts.signum or signal.SIGINT)
        raise
    del dataset  # the fitter's alone now: it lets the host copies go once on the device
    if interrupts.signum is not None:  # in the last moments of setting up: stop as in training
        fitter.request_stop(interrupts.signum)
    status, result, test = "failed", None, None
    try:
        with stop_on_signals(fitter, console, say=say_stops), \
                _out_of_memory_is_a_user_error():
            result = fitter.fit(initial_epoch)
        status = result.status
        if fitter.stop_signal is not None and (status == "completed" or fitter.ended):
            # the signal came after the last epoch: the run is whole, only the test
            # evaluation is skipped
            return _complete_without_test(
                run, result, console, as_json, 128 + fitter.stop_signal,
                f"Stopped ({signal.Signals(fitter.stop_signal).name}) after the last epoch:")
        if fitter.stop_signal is not None:
            run.update_info(status=status, end=now_text(), stop_reason=result.stop_reason)
            if as_json:
                _emit_end(run, status, result, None)
            if say_stops:
                console.print(f"[yellow]Stopped ({signal.Signals(fitter.stop_signal).name}): "
                              f"{result.stop_reason}.[/]" + (  # a tune trial: tune says next
                                  " Continue with: "
                                  f"{shell('nntrain', 'fit', '--resume', run.path)}"
                                  if run_path is None else ""), soft_wrap=True)
            return 128 + fitter.stop_signal  # 130 for Ctrl-C, 143 for SIGTERM
        with stop_on_signals(fitter, console, "skipping the rest of the test evaluation",
                             say=say_stops), \
                _out_of_memory_is_a_user_error():
            test = fitter.evaluate_test()  # nothing left to checkpoint: a signal skips it
        if fitter.stop_signal is not None and test is None:  # (a signal during its last
            # part came too late to skip it: the figures are kept)
            return _complete_without_test(
                run, result, console, as_json, 128 + fitter.stop_signal,
                f"Stopped ({signal.Signals(fitter.stop_signal).name}) in the test evaluation:")
        with exclusive(run.path / "metrics.json"):
            metrics = run.read_json("metrics.json")
            if test is not None:  # the best weights, or the last where no epoch was best
                metrics["test"] = test
                metrics["test_checkpoint"] = "best" if fitter.best_weights is not None \
                    else "last"
            atomic_write_json(run.path / "metrics.json", metrics)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once; the last checkpoint stands
        if result is not None and (result.status == "completed" or fitter.ended):
            status = result.status  # in the test evaluation
            signum = fitter.stop_signal or signal.SIGINT
            return _complete_without_test(
                run, result, console, as_json, 128 + signum,
                f"Stopped ({signal.Signals(signum).name}) in the test evaluation:")
        status = "stopped"
        run.update_info(status=status, end=now_text(), stop_reason="interrupted")
        if as_json:
            _emit_end(run, status, None, None)
        if run_path is not None:  # a trial: the search runs it again when it continues
            console.print("[yellow]Interrupted.[/]", soft_wrap=True)
        else:
            console.print(f"[yellow]Interrupted.[/] Continue from the last finished epoch "
                          f"with: {shell('nntrain', 'fit', '--resume', run.path)}",
                          soft_wrap=True)
        return 130
    except DiskFull as e:
        raise DiskFull(e.message, f"{e.hint}; then continue with: "
                       f"{shell('nntrain', 'fit', '--resume', run.path)}") from None
    except UserError as e:
        from nntrain import checkpoint

        if created is not None and checkpoint.find(run.checkpoints / "last") is None:
            # bad input found as training began (a user's layer, a generator's batch): a
            # run that never trained is not kept
            created.discard()
            status = "removed"
            raise
        if isinstance(e, UserCodeError):
            again = shell("nntrain", "fit", "--resume", run.path, "--trust-code")
            raise UserCodeError(e.message, f"{e.hint}, then continue from the last finished "
                                f"epoch: {again}") from None
        raise
    finally:
        if status == "failed":  # the run records why (`runs show`, the JSON end event)
            why = _failure(sys.exc_info()[1])
            with contextlib.suppress(DiskFull):  # the disk may still be full: keep the cause
                run.update_info(status="failed", end=now_text(), stop_reason=why)
            if as_json:
                _emit_end(run, status, fitter.result_so_far("failed", why), None)
    run.update_info(status=status, end=now_text(), stop_reason=result.stop_reason or None)
    if as_json:
        _emit_end(run, status, result, test)
    if not quiet:
        _print_fit_result(console, run, loaded.config.name, result, test, began,
                          initial_epoch, fitter.seconds_before_resume)
    return 0 if fitter.stop_signal is None else 128 + fitter.stop_signal  # nothing skipped


def _say_streaming(fitter, loaded: LoadedConfig, dataset, console: Console) -> None:
    from nntrain.data.stream import nbytes

    chunks = f"in chunks of {fitter.programs.steps_per_call} steps"
    console.print(f"Feeding the batches of {loaded.config.data.generator} to the device "
                  f"{chunks}" if fitter.generated else
                  f"Streaming the data ({nbytes(dataset.train) / 1e6:,.1f} MB of training "
                  f"examples) to the device {chunks}: it is over data.device_memory "
                  f"({fitter.budget / 1e6:,.1f} MB)", highlight=False, soft_wrap=True)


def _say_start(run: Run, loaded: LoadedConfig, dataset, resumed: bool, initial_epoch: int,
               console: Console) -> None:
    epochs = loaded.config.fit.epochs
    validation = examples(dataset.validation) if dataset.validation else 0
    sizes = f"  ({examples(dataset.train):,} train, {validation:,} validation examples)"
    if not resumed:
        what = f"Training {loaded.config.name} -> {run.path}{sizes}"
    elif initial_epoch < epochs:
        what = f"Resuming {run.path} at epoch {initial_epoch + 1}{sizes}"
    else:
        what = f"{run.path} has trained all {epochs} epochs: nothing to train (to train " \
            f"longer: --epochs N, N > {epochs})"
    console.print(what, highlight=False, soft_wrap=True)


def _complete_without_test(run: Run, result, console: Console, as_json: bool, code: int,
                           what: str) -> int:
    """A signal after the last epoch: the run is complete, only its test figures are not."""
    run.update_info(status=result.status, end=now_text(), stop_reason=result.stop_reason or None)
    if as_json:
        _emit_end(run, result.status, result, None)
    console.print(f"[yellow]{what}[/] training is complete, the test split was not evaluated. "
                  f"Test figures: {shell('nntrain', 'evaluate', run.path)}", soft_wrap=True)
    return code


def _restore(fitter, run: Run, console: Console) -> int:
    """The epoch to resume at. A run killed before its first checkpoint starts over (same
    seed, same result); one whose checkpoints were removed is an error."""
    from nntrain import checkpoint

    if checkpoint.find(run.checkpoints / "last") is None:
        done = run.info().get("epochs_completed")
        if done:
            raise checkpoint.CheckpointError(
                f"{run.path} recorded {done} finished epochs but has no checkpoint at "
                f"{run.checkpoints / 'last'}",
                "the checkpoint files were removed; train the config again in a new run")
        console.print("[yellow]note:[/] no checkpoint yet (the run stopped in its first "
                      "epoch): training it from the start", soft_wrap=True, highlight=False)
        return 0
    best = checkpoint.find(run.checkpoints / "best")
    if best is not None:
        try:
            checkpoint.load(best)
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(
                e.message, f"the best weights so far are lost: remove {best} to continue "
                "without them (the next improvement saves new ones), or train again") from None
    return fitter.restore()


def _failure(error: BaseException | None) -> str | None:
    """What made a run fail, in one line."""
    if error is None:
        return None
    if isinstance(error, UserError):
        message = error.message
    elif isinstance(error, TrainingFailed):
        message = str(error)
    else:  # a bug: its kind says more than its text
        message = f"{type(error).__name__}: {error}"
    return message.splitlines()[0] if message.strip() else type(error).__name__


def _emit_end(run: Run, status: str, result, test: dict[str, float] | None) -> None:
    """The last JSON line of `fit --log-format json`."""
    from nntrain.progress import emit_json, significant

    # figures as the epoch lines give them, so the best epoch's line matches best_value
    record: dict[str, Any] = {
        "event": "end", "status": status, "run": str(run.path),
        "best_epoch": None if result is None else result.best_epoch,
        "test": None if test is None else {k: significant(v) for k, v in test.items()}}
    if result is not None:
        record.update(epochs=len(result.history), monitor=result.monitor,
                      best_value=significant(result.best_value),
                      stop_reason=result.stop_reason or None)
    emit_json(record)


@contextlib.contextmanager
def _out_of_memory_is_a_user_error():
    """An allocation XLA could not make: the model or the batch is too big for the device,
    said as such (a run that trained no epoch is then not kept)."""
    try:
        yield
    except Exception as e:
        error = out_of_memory(e)
        if error is None:
            raise
        raise error from None


def _refuse_changed_config(run: Run, saved: LoadedConfig, config_path: Path | None,
                           overrides: list[str], resumed: LoadedConfig) -> LoadedConfig:
    """A resume continues the run as it started: a CONFIG given with it, or `--set`, may
    change `fit.epochs` (to train longer) and `fit.devices` (a preempted run resumed on
    another machine: the same training, split otherwise), nothing else. Returns the config
    asked for."""
    given = load_config(config_path, overrides) if config_path is not None else resumed
    if _resumable(saved) == _resumable(given):
        return given
    before, after = dump_config(saved), dump_config(given)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        str(run.config_path),
                                        str(config_path or "with --set")))
    what = f"{config_path} differs" if config_path is not None else "--set changes the run"
    raise UserError(f"{what} from the config the run started with:\n{diff}",
                    "a resume may only change fit.epochs (--epochs N) and fit.devices "
                    "(--devices N); train a changed config "
                    "as a new run, or continue as started: "
                    f"{shell('nntrain', 'fit', '--resume', run.path)}")


def _resumable(loaded: LoadedConfig) -> dict[str, Any]:
    """The config without what a resume may change."""
    data = _config_data(loaded)
    for key in ("epochs", "devices"):
        data.get("fit", {}).pop(key, None)
    return data


def _data_record(dataset) -> dict[str, dict[str, Any]]:
    """Each split's size and SHA-256: which data a run saw."""
    return {name: {"examples": examples(part), "sha256": part.digest()}
            for name, part in (("train", dataset.train), ("validation", dataset.validation),
                               ("test", dataset.test)) if part is not None}


def warn_if_data_changed(run: Run, dataset, console: Console,
                          splits: Sequence[str] = ("train", "validation", "test"),
                          consequence: str = "the resumed epochs train and report on the new "
                                             "data") -> None:
    """Data files may change after a run started: a resume, evaluate or predict then works
    on other data than the run's record says (SHA-256 in run.json): say so."""
    before = run.info().get("data") or {}
    parts = {"train": dataset.train, "validation": dataset.validation, "test": dataset.test}
    changed = [name for name in splits if parts.get(name) is not None and name in before
               and before[name].get("sha256") != parts[name].digest()]
    if changed:
        console.print(f"[yellow]warning:[/] the {' and '.join(changed)} data differ from "
                      f"what {run.path} started with (SHA-256 in run.json): {consequence}",
                      soft_wrap=True, highlight=False)


def _command_line() -> list[str]:
    """The command as it can be typed again: `python -m nntrain` runs nntrain/__main__.py,
    which is what sys.argv holds."""
    if Path(sys.argv[0]).name == "__main__.py":
        return [Path(sys.executable).name, "-m", "nntrain", *sys.argv[1:]]
    return list(sys.argv)


def _run_record(loaded: LoadedConfig, dataset, base_dir: Path) -> dict[str, Any]:
    import jax
    import optax

    record = {
        "name": loaded.config.name,
        "config_source": str(loaded.source),
        "config_dir": str(base_dir),
        "start": now_text(),
        "seed": loaded.config.seed,
        "versions": {"nntrain": nntrain.__version__, "jax": jax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
        "devices": [str(d) for d in jax.devices()],
        "data": _data_record(dataset),
    }
    if dataset.encoding is not None:  # predict's new rows, without the training file
        record["table_encoding"] = dataset.encoding
    if dataset.class_names is not None:  # for predict's labels, whatever the input
        record["class_names"] = {out: [str(name) for name in names]
                                 for out, names in dataset.class_names.items()}
    commit = _git_commit(base_dir)
    if commit:
        record["git_commit"] = commit
    return record


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _print_fit_result(console: Console, run: Run, name: str, result, test, began: float,
                      first_epoch: int = 0, earlier: float = 0.0) -> None:
    """The end of `fit`: what happened, then the figures as a table (train, validation and
    test side by side), then where the run is."""
    from nntrain.progress import fmt_number

    console.print(f"[bold]{name}: {result.status}[/]"
                  + (f" ({result.stop_reason})" if result.stop_reason else ""), soft_wrap=True)
    history = result.history
    epoch = result.best_epoch or len(history)
    facts = [_plural(len(history), "epoch")]
    if result.best_epoch is not None:
        facts.append(f"best epoch {result.best_epoch} ({result.monitor} "
                     f"{fmt_number(result.best_value)})")
    # this command's epochs (a resumed epoch's seconds include the earlier session's part)
    trained = sum(r["seconds"] for r in history[first_epoch:]) - earlier
    facts.append(f"{trained:.1f}s training, {time.perf_counter() - began:.1f}s in all")
    console.print(", ".join(facts), highlight=False)
    figures = {k: v for k, v in history[epoch - 1].items()
               if k not in ("epoch", "seconds", "learning_rate")}
    names = [k for k in figures if not k.startswith("val_")]
    # the test split is evaluated with the best weights: those of the epoch shown
    columns = [("train", figures),
               ("validation", {k[4:]: v for k, v in figures.items() if k.startswith("val_")}),
               ("test", test or {})]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    table.add_column(f"epoch {epoch}", no_wrap=True)
    for title, values in columns:
        if values:
            table.add_column(title, justify="right")
    for name in names:
        table.add_row(name, *(fmt_number(values.get(name)) for _, values in columns
                              if values))
    console.print(table)
    console.print(f"run: {run.path}", highlight=False, soft_wrap=True)


# -- lr-find ---------------------------------------------------------------------------------
def lr_find(config_path: Path, overrides: list[str], runs_dir: Path, console: Console, *,
            min_lr: float = 1e-5, max_lr: float = 10.0, steps: int = 300) -> None:
    """The learning-rate range test (nntrain.lr_find) into runs/<name>-lr-find/<timestamp>/:
    lr_find.csv, lr_find.png, lr_find.json and the config used. The config file is only read."""
    import math

    if not (math.isfinite(min_lr) and min_lr > 0):
        raise UserError(f"--min-lr {min_lr}: give a positive learning rate", "e.g. --min-lr 1e-5")
    if not math.isfinite(max_lr):
        raise UserError(f"--max-lr {max_lr}: give a finite learning rate", "e.g. --max-lr 10")
    if max_lr > 1e6:  # float32 weights diverge long before; past 3e38 the rate itself is inf
        raise UserError(f"--max-lr {max_lr:g}: give at most 1e6", "e.g. --max-lr 10")
    if not max_lr > min_lr:
        raise UserError(f"--max-lr {max_lr} must be greater than --min-lr {min_lr}",
                        "e.g. --min-lr 1e-5 --max-lr 10")
    if steps < 10:
        raise UserError(f"--steps {steps}: give at least 10 steps", "a few hundred is usual")
    with deferred_interrupts() as interrupts:  # acted on at the checks below, never lost
        _lr_find(config_path, overrides, runs_dir, console, interrupts, min_lr=min_lr,
                 max_lr=max_lr, steps=steps)


def _lr_find(config_path: Path, overrides: list[str], runs_dir: Path, console: Console,
             interrupts: Any, *, min_lr: float, max_lr: float, steps: int) -> None:
    from nntrain import lr_find as finder

    def stop_if_signalled(*_step: Any) -> None:  # SIGTERM (a scheduler): quietly, as exit 143
        if interrupts.signum == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        interrupts.check()

    loaded = load_config(config_path, overrides)
    configure_jax()
    setup = prepare_setup(loaded)
    if loaded.config.data.generator:
        raise UserError("lr-find reads its batches from data in memory, and this config's "
                        f"come from a generator ({loaded.config.data.generator})",
                        "run it on a config whose data.train names files of the same data")
    dataset = load_data(setup, config_path.resolve().parent, console, quiet=False)
    stop_if_signalled()
    run = create_run(runs_dir, f"{loaded.config.name}-lr-find")
    atomic_write_text(run.config_path, dump_config(loaded))
    from nntrain.config.entries import entry_args
    from nntrain.train.fit import batch_for

    batch = batch_for(loaded.config.fit.batch_size, len(dataset.train))
    every = entry_args(loaded.config.compile.optimizer).gradient_accumulation_steps
    console.print(f"Learning-rate range test for {loaded.config.name} -> {run.path}  "
                  f"({steps} steps of " + (f"{every} batches of {batch}" if every else
                                           f"{batch}") + f", learning rate {min_lr:.3g} to "
                  f"{max_lr:.3g}, growing every step)", soft_wrap=True)
    start, started = time.perf_counter(), now_text()
    try:
        result = finder.run_range_test(setup, dataset, min_lr=min_lr, max_lr=max_lr,
                                       steps=steps, on_step=stop_if_signalled)
        seconds = time.perf_counter() - start
        finder.write_csv(run.path / "lr_find.csv", result)
        finder.plot(run.path / "lr_find.png", result, title=f"{loaded.config.name}: learning "
                    "rate finder")
        stop_if_signalled()
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: no half-made folder (it is short)
        run.discard()
        raise
    best = result.best_index
    atomic_write_json(run.path / "lr_find.json", {
        "name": loaded.config.name, "config_source": str(loaded.source), "start": started,
        "min_lr": min_lr, "max_lr": max_lr, "steps": steps,
        "steps_done": len(result.losses), "stop_reason": result.stop_reason,
        "lowest_smoothed_loss": None if best is None else result.smoothed[best],
        "learning_rate_at_lowest": None if best is None else result.learning_rates[best],
        "suggestion": result.suggestion, "notes": result.notes, "seconds": round(seconds, 3)})
    console.print(f"{len(result.losses)} steps in {seconds:.1f}s; stopped: "
                  f"{result.stop_reason}", soft_wrap=True)
    if best is not None:
        console.print(f"lowest smoothed loss {result.smoothed[best]:.4f} at learning rate "
                      f"{result.learning_rates[best]:.3g}", soft_wrap=True)
    console.print(f"wrote lr_find.csv, lr_find.png and lr_find.json in {run.path}",
                  soft_wrap=True)
    if result.suggestion is None:
        raise UserError("no learning rate to suggest: " + "; ".join(result.notes),
                        f"the curve is in {run.path / 'lr_find.png'} (and lr_find.csv) to look at")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"[bold]suggested learning rate: {result.suggestion:.3g}[/] (a tenth of the "
                  "rate at the lowest smoothed loss)", soft_wrap=True)
