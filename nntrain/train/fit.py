"""The fit loop: epochs of compiled chunks, callbacks, and a run directory kept complete
after every epoch."""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import dataclasses
import io
import math
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from nntrain import checkpoint
from nntrain.build import Setup, class_weight_vector, output_class_names
from nntrain.config.entries import entry_args, entry_name
from nntrain.consoles import write_stdout
from nntrain.data.generator import GeneratorSplit
from nntrain.data.sources import Dataset
from nntrain.data.stream import memory_budget, nbytes, row_bytes
from nntrain.errors import TrainingFailed
from nntrain.fsutil import atomic_write_json, atomic_write_text, exclusive
from nntrain.optimizers import (
    finalize_weights,
    get_learning_rate,
    has_schedule,
    moving_average,
    set_learning_rate,
)
from nntrain.progress import EpochProgress
from nntrain.runs import Run
from nntrain.train import callbacks as cb
from nntrain.train.devices import Placement, fetch, shapes_as_passed
from nntrain.train.drawing import CLOSE_TIMEOUT, HistoryDrawer
from nntrain.train.memory import release_freed_memory
from nntrain.train.programs import (
    Programs,
    chunking,
    compile_on_thread,
    device_shapes,
    epoch_order,
    initial_shapes,
    initialize,
    place,
    wait_for_compile,
)


@dataclass
class FitResult:
    status: str  # completed | stopped | failed
    history: list[dict[str, float]]
    best_epoch: int | None  # 1-based
    monitor: str
    best_value: float | None
    test: dict[str, float] | None = None
    stop_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def batch_for(size: int, rows: int, devices: int = 1) -> int:
    """The batch a split of `rows` examples is fed in: as Keras does, a split smaller than
    the batch is one batch of itself (rounded up to split over the devices), not padded."""
    return min(size, -(-max(rows, 1) // devices) * devices)


def make_programs(setup: Setup, steps_per_epoch: int | None = None,
                  placement: Placement | None = None,
                  max_steps_per_call: int | None = None,
                  class_weight: np.ndarray | None = None, *, train_rows: int | None = None,
                  eval_rows: int | None = None) -> Programs:
    """The compiled programs; `train_rows` and `eval_rows` (the largest split evaluated)
    bound the batch sizes."""
    fit = setup.loaded.config.fit
    devices = 1 if placement is None else placement.count
    k, rolled = chunking(setup, steps_per_epoch or 1 << 30, fit.steps_per_execution)
    k = min(k, max_steps_per_call or k)
    eval_batch = fit.validation_batch_size or fit.batch_size
    return Programs(setup,
                    batch_size=fit.batch_size if train_rows is None else
                    batch_for(fit.batch_size, train_rows, devices),
                    eval_batch_size=eval_batch if eval_rows is None else
                    batch_for(eval_batch, eval_rows, devices),
                    steps_per_call=k, rolled=rolled, placement=placement,
                    class_weight=class_weight)


_REWRITTEN_HINT = ("the record was changed after it was written: restore it from a backup, "
                   "or train the config anew")


class Fitter:
    """Owns the train state while fitting; callbacks talk to it (Keras's `model`)."""

    def __init__(self, setup: Setup, dataset: Dataset, run: Run, console: Console,
                 quiet: bool = False, log_format: str = "rich",
                 placement: Placement | None = None, compile_ahead: bool = True) -> None:
        """`compile_ahead`: start compiling the first epoch's programs now, beside the init
        program (`_compile_ahead`); off for a resumed run, whose checkpoint may end it
        before it trains."""
        self.setup, self.dataset, self.run, self.console, self.quiet = (
            setup, dataset, run, console, quiet)
        self.placement = placement or Placement.from_config(setup.loaded)
        self.log_format = log_format  # "json": one JSON object per epoch on stdout
        self.config = setup.loaded.config
        self.n_train = len(dataset.train)
        self.n_validation = 0 if dataset.validation is None else len(dataset.validation)
        generated = isinstance(dataset.train, GeneratorSplit)  # its batches are the user's
        self.batch_size = self.config.fit.batch_size if generated else \
            batch_for(self.config.fit.batch_size, self.n_train, self.placement.count)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        # over the device memory budget, the data streams in chunks; two chunks are on the
        # device at once (the one running and the next)
        self.budget = memory_budget(self.config.data.device_memory, self.placement.devices[0])
        self.streaming = isinstance(dataset.train, GeneratorSplit) or \
            nbytes(dataset.train) + nbytes(dataset.validation) > self.budget
        cap = None if isinstance(dataset.train, GeneratorSplit) else max(
            1, self.budget // (2 * row_bytes(dataset.train) * self.batch_size))
        evaluated = max(self.n_validation, 0 if dataset.test is None else len(dataset.test))
        self.programs = make_programs(
            setup, self.steps_per_epoch, self.placement, cap if self.streaming else None,
            class_weight_vector(setup, output_class_names(setup, dataset)),
            train_rows=None if generated else self.n_train,
            eval_rows=None if generated else evaluated)
        self.generated = generated
        self.stop_training = False
        # whether callbacks see the optimizer's moving average as the weights (SwapEMAWeights)
        self.ema_in_model = False
        # why training ended (early stopping, a callback), once it has: kept in
        # checkpoints/last, so a run killed in its last moments resumes to its end, not on
        self.ended: str | None = None
        self.history: list[dict[str, float]] = []
        self.best_weights: dict[str, Any] | None = None
        self.stop_signal: int | None = None
        # mid-epoch resume point: steps done, the epoch's running sums, its seconds so far
        self._resume_at: tuple[int, np.ndarray, float] | None = None
        self.seconds_before_resume = 0.0  # of those seconds, the earlier session's
        # the rate before this epoch's on_epoch_begin hooks: a mid-epoch resume runs them
        # again, from it, so a schedule like `lr * 0.9` is applied once, not twice
        self._rate_before_hooks: float | None = None
        self._states_before_hooks: list[dict[str, Any]] = []
        self._states_at_stop: list[dict[str, Any]] | None = None  # a mid-epoch resume's
        self._host_weights: tuple[Any, Any, dict[str, Any]] | None = None  # get_weights
        # history.png is drawn by a process of its own, never holding up training
        self._drawer = HistoryDrawer(run.path, setup.loaded.config.name)  # wherever it lies
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nntrain-checkpoint")
        self._writes: collections.deque[Future] = collections.deque()  # in order
        # the last batch of writes queued, with its calls by target, until the writer starts it
        self._waiting: tuple[Future, dict[Any, tuple]] | None = None
        self._batch: dict[Any, tuple] | None = None  # an epoch end's writes, sent together
        self._write_failed = False
        self.callbacks = self._make_callbacks()
        self.checkpointer = next(c for c in self.callbacks if isinstance(c, cb.ModelCheckpoint))
        self._order_compiled: Future | None = None  # by _compile_ahead
        if compile_ahead:
            self._compile_ahead()
        keys, params, state, opt_state = initialize(setup, self.config.seed)
        # normalization layers learn their statistics from the training data, once
        state = setup.model.adapt(params, state, getattr(dataset.train, "x", None))
        self.carry = self.placement.replicate({
            "params": params, "state": state, "opt_state": opt_state,
            "step": np.int32(0)})
        self.keys = self.placement.replicate(keys)

    @property
    def resume_step(self) -> int:
        """Where the next epoch starts: 0, or the step a mid-epoch checkpoint stopped at."""
        return self._resume_at[0] if self._resume_at else 0

    def _make_callbacks(self) -> list[cb.Callback]:
        # the user code callbacks name, imported and checked: a config error (exit 2) if not
        code = cb.check_callbacks(self.setup.loaded)
        model = cb.ModelView(self)  # what a user's callback sees as `self.model`
        made: list[cb.Callback] = []
        for i, entry in enumerate(self.config.fit.callbacks):
            name, args = entry_name(entry), entry_args(entry)
            monitors = (cb.EarlyStoppingArgs, cb.ModelCheckpointArgs, cb.ReduceLROnPlateauArgs)
            if isinstance(args, monitors) and args.mode == "auto":
                args = args.model_copy(update={
                    "mode": self.setup.monitor_mode(args.monitor, "auto")})
            if isinstance(args, cb.EarlyStoppingArgs):
                made.append(cb.EarlyStopping(args))
            elif isinstance(args, cb.ModelCheckpointArgs):  # the first keeps checkpoints/best
                made.append(cb.ModelCheckpoint(args, keeps_best=not any(
                    isinstance(c, cb.ModelCheckpoint) for c in made)))
            elif isinstance(args, cb.ReduceLROnPlateauArgs):
                made.append(cb.ReduceLROnPlateau(args))
            elif isinstance(args, cb.LearningRateSchedulerArgs):
                made.append(cb.LearningRateScheduler(args, code.get(i)))
            elif isinstance(args, cb.CSVLoggerArgs):
                made.append(cb.CSVLogger(args, self.run.path))
            elif isinstance(args, cb.TensorBoardArgs):
                made.append(cb.TensorBoard(args, self.run.path, self.config))
            elif isinstance(args, cb.SwapEMAWeightsArgs):
                made.append(cb.SwapEMAWeights(args))
            elif i in code:
                made.append(cb.UserCallback.create(name, code[i], args, model))
            elif not isinstance(args, cb.TerminateOnNaNArgs):
                raise NotImplementedError(name)
        if not any(isinstance(c, cb.ModelCheckpoint) for c in made):
            # checkpoints/best always follows something: early stopping's figure, else val_loss
            stopper = next((c for c in made if isinstance(c, cb.EarlyStopping)), None)
            monitor = stopper.args.monitor if stopper else (
                "val_loss" if self.dataset.validation is not None else "loss")
            mode = stopper.args.mode if stopper else "auto"
            made.append(cb.ModelCheckpoint(
                cb.ModelCheckpointArgs(monitor=monitor, mode=mode, save_best_only=True),
                follows=stopper))
        return made

    def _stoppers(self) -> list[cb.EarlyStopping]:
        return [c for c in self.callbacks if isinstance(c, cb.EarlyStopping)]

    # -- what callbacks use ------------------------------------------------------------------
    def get_weights(self) -> dict[str, Any]:
        """The weights on the host: one copy from the device per state of the weights,
        however many ask (early stopping and the checkpoint both do in an improving epoch;
        for a large model each copy is the model's size)."""
        params, state = self.carry["params"], self.carry["state"]
        if self.ema_in_model:  # a swap_ema_weights callback's view, at an epoch's end
            params = moving_average(self.carry["opt_state"])
        cached = self._host_weights
        if cached is None or cached[0] is not params or cached[1] is not state:
            cached = self._host_weights = (params, state,
                                           fetch({"params": params, "state": state}))
        return cached[2]

    def validation_params(self) -> Any:
        """The weights validation runs on: the optimizer's moving average of them with a
        swap_ema_weights callback, as Keras swaps it in for evaluation."""
        swapping = any(isinstance(c, cb.SwapEMAWeights) for c in self.callbacks)
        return moving_average(self.carry["opt_state"]) if swapping else self.carry["params"]

    def _finalize_weights(self) -> None:
        """As training ends (not when interrupted: a resume goes on where it was), Keras's
        `finalize_variable_values`: with `use_ema`, the weights become their moving average,
        and so does what the last checkpoint keeps."""
        params = finalize_weights(self.carry["params"], self.carry["opt_state"])
        if params is not self.carry["params"]:  # a copy: a chunk donates the carry's buffers
            self.carry = {**self.carry, "params": jax.tree.map(jnp.copy, params)}

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.carry = {**self.carry, **self.placement.replicate(weights)}

    def save_weights(self, name: str, epoch: int, logs: dict[str, float]) -> None:
        weights = self.get_weights()
        if name == "best":
            self.best_weights = weights
        self._save(name, weights, {"kind": "weights", "epoch": epoch + 1, "logs": logs})

    # -- resume ------------------------------------------------------------------------------
    def restore(self) -> int:
        """Load `checkpoints/last`; returns the number of epochs already done."""
        resumed = checkpoint.load_for_resume(self.run.checkpoints / "last")
        if resumed.warning:
            self.console.print(f"[yellow]warning:[/] {resumed.warning}", soft_wrap=True,
                               highlight=False)
        arrays, meta = resumed.arrays, resumed.meta
        where = str(self.run.checkpoints / "last")
        self._check_record(meta, arrays, where)
        for name in ("params", "state", "opt_state"):
            try:
                restored = checkpoint.unflatten(self.carry[name], checkpoint.subtree(arrays, name),
                                                where)
            except checkpoint.CheckpointError as e:
                if name != "opt_state":
                    raise
                raise checkpoint.CheckpointError(
                    f"{e.message} (the optimizer's state)",
                    "the checkpoint's optimizer state has another layout: another optimizer, "
                    "or one an older nntrain kept differently (nadam before it followed "
                    "Keras's momentum schedule); the weights are fine for evaluate and predict,"
                    " but training must start anew") from None
            self.carry[name] = self.placement.replicate(restored)
        self.carry["step"] = self.placement.replicate(jnp.int32(arrays["step"]))
        self.history = meta["history"]
        self.ended = meta.get("ended")
        if len(meta["callbacks"]) != len(self.callbacks):  # (a hand-edited older record)
            raise checkpoint.CheckpointError(
                f"{where} holds the state of {len(meta['callbacks'])} callbacks, and the run's "
                f"config has {len(self.callbacks)}",
                "the checkpoint does not belong to this config: train the config anew")
        for callback, state in zip(self.callbacks, meta["callbacks"], strict=True):
            try:
                callback.load_state(state)
                callback.check_state()
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise checkpoint.CheckpointError(
                    f"{where}: the state of {type(callback).__name__} is damaged ({e})",
                    _REWRITTEN_HINT) from None
        template = {"params": self.carry["params"], "state": self.carry["state"]}
        for i, stopper in enumerate(self._stoppers()):
            # `early_stopping_best`: a checkpoint from before each stopper had its own slot
            kept = checkpoint.subtree(arrays, f"early_stopping_best_{i}") or (
                checkpoint.subtree(arrays, "early_stopping_best") if i == 0 else {})
            if kept and stopper.args.restore_best_weights:
                stopper.best_weights = checkpoint.unflatten(template, kept, where)
        best = checkpoint.find(self.run.checkpoints / "best")
        if best is not None:
            best_arrays, _ = checkpoint.load(best)
            self.best_weights = checkpoint.unflatten(template, best_arrays, str(best))
        if meta.get("step_in_epoch"):
            self._resume_at = (int(meta["step_in_epoch"]),
                               np.asarray(meta["partial_sums"], np.float32),
                               float(meta.get("seconds_in_epoch") or 0.0))
            # on_epoch_begin runs again from the states before it; then the callbacks go on
            # from where they were, their batch hooks' counts and all
            self._states_at_stop = meta.get("callbacks_at_stop")
            if meta.get("rate_before_hooks") is not None:
                self.carry["opt_state"] = self.placement.replicate(set_learning_rate(
                    self.carry["opt_state"], meta["rate_before_hooks"]))
        if self.history:
            # a kill after the checkpoint but before the records (or a fallback to the
            # previous checkpoint) leaves them out of step with it: the checkpoint decides
            self._write_records()
        return int(meta["epoch"])

    def _check_record(self, meta: dict, arrays: dict, where: str) -> None:
        """What `--resume` reads of the checkpoint's record, checked for type and range: the
        digests say the files are as written, not that what was written makes sense."""
        def bad(what: str) -> checkpoint.CheckpointError:
            return checkpoint.CheckpointError(f"{where}: damaged checkpoint record: {what}",
                                              _REWRITTEN_HINT)

        epoch = meta.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise bad(f"epoch {epoch!r} is not a count of epochs")
        history = meta.get("history")
        if not isinstance(history, list) or len(history) != epoch or not all(
                isinstance(row, dict) and all(isinstance(v, int | float) and
                                              not isinstance(v, bool) for v in row.values())
                for row in history):
            raise bad(f"its history is not {epoch} rows of figures")
        if [row.get("epoch") for row in history] != list(range(1, epoch + 1)):
            raise bad("its history's epochs are not 1, 2, ...")
        if not isinstance(meta.get("callbacks"), list):
            raise bad("no callback states")
        if "step" not in arrays:
            raise bad("no step count")
        step = meta.get("step_in_epoch") or 0
        if not isinstance(step, int) or not 0 <= step < self.steps_per_epoch:
            raise checkpoint.CheckpointError(
                f"{where}: the run stopped at step {step!r} of an epoch, and its epochs now "
                f"have {self.steps_per_epoch} steps",
                "the training data has fewer examples than when the run stopped (resume on "
                "the data it had), or the record was changed after it was written")
        if step:
            sums = meta.get("partial_sums")
            size = len(self.programs.layout.zeros())
            if not isinstance(sums, list) or len(sums) != size or not all(
                    isinstance(v, int | float) for v in sums):
                raise bad(f"partial_sums is not {size} numbers")

    def request_stop(self, signum: int) -> None:
        """Stop after the chunk running now (Ctrl-C, SIGTERM): checkpoint, then return."""
        self.stop_signal = signum

    def _batch_hooks(self) -> bool:
        """Whether a user's callback has on_train_batch_end: it may set stop_training there,
        which must stop training right after the chunk it saw, so chunks are reported as
        they finish rather than one chunk late."""
        return any("on_train_batch_end" in getattr(c, "hooks", ()) for c in self.callbacks)

    def _stop_training_agreed(self) -> bool:
        """Whether a callback set stop_training in on_train_batch_end, in any process: all
        end the epoch at the same step (one that stopped alone would leave the others
        waiting in the next step's collectives)."""
        self.stop_training = bool(self.placement.largest(int(self.stop_training)))
        return self.stop_training

    def _stop_agreed(self) -> bool:
        """Whether to stop now. With several processes, all stop when any was signalled: one
        that stopped alone would leave the others waiting in the next step's collectives."""
        signum = self.placement.largest(self.stop_signal or 0)
        if signum and self.stop_signal is None:
            self.stop_signal = signum
        return bool(signum)

    def _save_last(self, epoch: int,
                   partial: tuple[int, np.ndarray, float] | None = None) -> None:
        """The resume checkpoint after `epoch`, or inside it: `partial` is (steps done, the
        epoch's running sums, its seconds so far) when training stops mid-epoch."""
        trees: dict[str, Any] = {k: self.carry[k] for k in ("params", "state", "opt_state")}
        trees["step"] = self.carry["step"]
        for i, stopper in enumerate(self._stoppers()):
            if stopper.best_weights is not None:
                trees[f"early_stopping_best_{i}"] = stopper.best_weights
        meta = {"kind": "resume", "epoch": epoch + 1, "history": self.history,
                "callbacks": [c.state() for c in self.callbacks], "ended": self.ended}
        if partial is not None:  # see restore: on_epoch_begin runs again from the first
            meta.update(epoch=epoch, step_in_epoch=partial[0],
                        callbacks=self._states_before_hooks, callbacks_at_stop=meta["callbacks"],
                        partial_sums=[float(v) for v in partial[1]],
                        seconds_in_epoch=round(partial[2], 3),
                        rate_before_hooks=self._rate_before_hooks)
        self._save("last", trees, meta, keep_previous=True)

    def _save(self, name: str, trees: dict[str, Any], meta: dict[str, Any],
              keep_previous: bool = False) -> None:
        """Write a checkpoint from host copies on the writer thread: training goes on while
        the file is hashed and synced."""
        # a host copy for the writer thread; the history row by row (it grows every epoch)
        copied = copy.deepcopy({k: v for k, v in meta.items() if k != "history"})
        if "history" in meta:
            copied["history"] = _rows(meta["history"])
        self._in_order(("checkpoint", name), checkpoint.save, self.run.checkpoints / name,
                       fetch(trees), copied, keep_previous=keep_previous)

    def _in_order(self, target: Any, write: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> None:
        """Run a write on the writer thread after the ones before it, so the run's records
        never get ahead of its checkpoints. When the writer is behind (epochs of
        milliseconds), a batch still waiting is taken into the next one, which replaces its
        writes of the same `target` (a checkpoint name, a file): only the newest of each
        lands. A failed write (a full disk) is raised here, at a later write, or when `fit`
        ends."""
        if self._batch is not None:
            self._batch[target] = (write, args, kwargs)
        else:
            self._submit({target: (write, args, kwargs)})

    def _submit(self, calls: dict[Any, tuple]) -> None:
        self._raise_failed_writes()
        if self._waiting is not None and self._waiting[0].cancel():  # not started yet
            # the older batch's writes that these do not replace go first, then these
            calls = {**{k: v for k, v in self._waiting[1].items() if k not in calls}, **calls}
        job = self._writer.submit(self._write_batch, calls)
        self._waiting = (job, calls)
        self._writes.append(job)

    @contextlib.contextmanager
    def _writes_together(self) -> Iterator[None]:
        """An epoch end's writes (best weights, the resume checkpoint, the records) go to the
        writer as one batch, in the order they were asked for: a batch taken into a later
        one can never put a record before the checkpoint it describes."""
        self._batch = {}
        try:
            yield
        finally:
            calls, self._batch = self._batch, None
            if calls:
                self._submit(calls)

    def _write_batch(self, calls: dict[Any, tuple]) -> None:
        for write, args, kwargs in calls.values():
            self._write_unless_failed(write, args, kwargs)

    def _write_unless_failed(self, write: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        if self._write_failed:  # after a failed write nothing later may land: a record or
            return  # checkpoint that refers to the lost file would make a resume diverge
        try:
            write(*args, **kwargs)
        except BaseException:
            self._write_failed = True
            raise

    def _raise_failed_writes(self, wait: bool = False) -> None:
        """Raise the first failed write among those done (with `wait`, after all are)."""
        if wait:
            futures.wait(self._writes)
        while self._writes and self._writes[0].done():  # the writer takes them in order
            job = self._writes.popleft()
            if not job.cancelled():  # a cancelled batch was taken into a later one
                job.result()

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, initial_epoch: int = 0) -> FitResult:
        """Train from `initial_epoch`; every checkpoint is on disk when this returns."""
        try:
            result = self._fit(initial_epoch)
            self._raise_failed_writes(wait=True)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                self._raise_failed_writes(wait=True)
            self._close_drawer(timeout=5.0)  # an error (a second Ctrl-C) leaves soon
            raise
        self._close_drawer()  # after the last history.csv: its drawing is the last
        return result

    def _close_drawer(self, timeout: float = CLOSE_TIMEOUT) -> None:
        failure = self._drawer.close(timeout)
        if failure is not None:  # the run is complete without it: say so, do not fail
            self.console.print(
                f"[yellow]warning:[/] history.png was not drawn: {failure}. Draw the curves "
                f"with `nntrain plot {self.run.path} -o {self.run.path / 'history.png'}`",
                soft_wrap=True, highlight=False)

    def _fit(self, initial_epoch: int) -> FitResult:
        config, programs = self.config, self.programs
        epochs = config.fit.epochs
        train = place(self.dataset.train, self.placement, self.streaming)
        validation = None if self.dataset.validation is None else \
            place(self.dataset.validation, self.placement, self.streaming)
        if not self.streaming:  # on the device now: let the host's copies go (on a CPU the
            # device's memory is the same RAM, and both copies doubled the data's share)
            self.dataset = dataclasses.replace(self.dataset, train=None, validation=None)
        padded = self.steps_per_epoch * self.batch_size
        status, reason = ("stopped", self.ended) if self.ended else ("completed", "")
        if self.placement.is_primary:
            self._drawer.start()  # matplotlib's import while the first programs compile
        for callback in self.callbacks:
            callback.on_train_begin(self)
        batch_hooks = self._batch_hooks()
        for epoch in range(initial_epoch, initial_epoch if self.ended else epochs):
            self._host_weights = None  # the last epoch's copy: no longer needed here
            opt_state = self.carry["opt_state"]
            self._rate_before_hooks = None if has_schedule(opt_state) \
                else get_learning_rate(opt_state)
            # a resume inside this epoch runs on_epoch_begin again: from these states
            self._states_before_hooks = copy.deepcopy([c.state() for c in self.callbacks])
            for callback in self.callbacks:
                callback.on_epoch_begin(epoch, self)
            if self._states_at_stop is not None:
                for callback, state in zip(self.callbacks, self._states_at_stop, strict=True):
                    callback.load_state(state)
                self._states_at_stop = None
            start = time.perf_counter()
            validation_compiled = self._compile_validation_ahead(validation) \
                if epoch == initial_epoch else None
            if self._order_compiled is not None:  # wait for it rather than compile it again
                wait_for_compile(self._order_compiled)
                self._order_compiled = None
            order = self.placement.replicate(epoch_order(
                self.keys["order"], epoch, self.n_train, padded, config.fit.shuffle))
            with EpochProgress(self.console, epoch, epochs, self.steps_per_epoch,
                               self.batch_size, self.quiet,
                               json_lines=self.log_format == "json",
                               compiling=epoch == initial_epoch) as progress:
                def on_chunk(done: int, sums: np.ndarray, epoch=epoch, progress=progress):
                    logs = programs.layout.result(sums)
                    if not math.isfinite(logs["loss"]):
                        raise TrainingFailed(
                            f"loss became {logs['loss']} in epoch {epoch + 1}, by step {done} "
                            f"of {self.steps_per_epoch}",
                        )
                    progress.update(done, logs)
                    for callback in self.callbacks:  # once per chunk: its last batch
                        hook = getattr(callback, "on_train_batch_end", None)
                        if hook is not None:
                            hook(done - 1, logs, self)

                start_step, sums, seconds_before = self._resume_at or (0, None, 0.0)
                self._resume_at = None
                if seconds_before:  # an epoch's seconds: both sessions' parts
                    start -= seconds_before
                    self.seconds_before_resume = seconds_before
                self.carry, sums, done = programs.train_epoch(
                    self.carry, train, order, self.n_train, self.keys["dropout"], on_chunk,
                    start_step=start_step, sums=sums,
                    should_stop=lambda: self._stop_agreed() or (
                        batch_hooks and self._stop_training_agreed()),
                    epoch=epoch, report_late=not batch_hooks,
                    # the training compiler's scratch back to the OS while the chunk runs
                    meanwhile=(lambda _: release_freed_memory()) if epoch == initial_epoch
                    else None)
                if validation_compiled is not None:
                    validation_compiled.result()
            if done < self.steps_per_epoch and self.stop_signal is not None:
                # interrupted: keep the place in the epoch (a callback's stop_training
                # instead ends the epoch here, as in Keras: validation, on_epoch_end)
                self._save_last(epoch, (done, sums, time.perf_counter() - start))
                status = "stopped"
                reason = f"interrupted in epoch {epoch + 1} at step {done}"
                break
            logs = programs.layout.result(sums)
            if validation is not None:
                val = programs.evaluate(self.validation_params(), self.carry["state"],
                                        validation, self.n_validation)
                logs.update({f"val_{k}": v for k, v in val.items()})
            # the scratch of training and validation (and of their compilers, in the first
            # epoch) back to the OS; not after epochs under a second, which the page faults
            # of the next epoch would slow down measurably
            if epoch == initial_epoch or time.perf_counter() - start > 1.0:
                release_freed_memory()
            logs["learning_rate"] = get_learning_rate(self.carry["opt_state"])
            best_before = self.checkpointer.tracker.best_epoch
            # what callbacks print comes after the epoch's line, as in Keras (the line says
            # whether a callback saved the best weights, so it waits for them)
            said = io.StringIO()
            try:
                with self._writes_together():
                    with contextlib.redirect_stdout(said):
                        try:
                            for callback in self.callbacks:
                                callback.on_epoch_end(epoch, logs, self)
                        finally:
                            self.ema_in_model = False
                    if self.stop_training:
                        self.ended = self._stop_reason(epoch, done)
                    if self.ended or epoch + 1 == epochs:
                        self._finalize_weights()
                    seconds = time.perf_counter() - start
                    self.history.append({"epoch": epoch + 1, **logs,
                                         "seconds": round(seconds, 3)})
                    self._record_epoch(epoch)
                improved = self.checkpointer.tracker.best_epoch != best_before
                progress.finish(logs, seconds, "saved best" if improved else "")
            finally:
                write_stdout(said.getvalue())
            if self.ended:
                status, reason = "stopped", self.ended
                break
            if self._stop_agreed() and epoch + 1 < epochs:
                status, reason = "stopped", f"interrupted after epoch {epoch + 1}"
                break
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self._result(status, reason)

    def _compile_ahead(self) -> None:
        """Start compiling the first epoch's programs, the training chunk and the epoch's
        order, each on a thread of its own, from the shapes of what they will be passed,
        while this thread compiles and runs the init program. On 2 CPU cores, fashion_mlp's
        first epoch ended some 0.5 s sooner with the training chunk compiled beside the init
        program (the order's compile, under half a second, then gained nothing more there:
        the compiles share the two cores); more cores compile all three at once. A carry of
        other types (a resumed checkpoint's) has its program compiled when first called."""
        keys, params, state, opt_state = initial_shapes(self.setup, self.config.seed)
        padded = self.steps_per_epoch * self.batch_size
        # epoch_order's static arguments as _fit passes them
        self._order_compiled = compile_on_thread("compile-order", lambda: epoch_order.lower(
            self.placement.as_replicated(keys["order"]), 0, self.n_train, padded,
            self.config.fit.shuffle).compile())
        if self.streaming:  # its chunks are made as it goes
            return
        carry = {"params": params, "state": state, "opt_state": opt_state,
                 "step": jax.ShapeDtypeStruct((), jnp.int32)}
        self.programs.compile_train_ahead(
            self.placement.as_replicated(carry), device_shapes(self.dataset.train, self.placement),
            self.placement.as_replicated(jax.ShapeDtypeStruct((padded,), jnp.int32)),
            self.n_train, self.placement.as_replicated(keys["dropout"]))

    def _compile_validation_ahead(self, validation) -> Future | None:
        """The validation program, compiled on a thread of its own while the epoch's order
        is drawn and the first chunk runs. One after the other, the two compiles added up:
        on a GPU an epoch can take less time than either (fashion_mlp at batch 256 on an
        H100: 6.3 s and 5.0 s of compiling and autotuning, 0.02 s an epoch)."""
        if validation is None or self.streaming:
            return None
        shapes = shapes_as_passed((self.carry["params"], self.carry["state"]))
        # the shapes, not the carry: the first chunk donates its buffers
        return compile_on_thread("compile-validation", lambda: self.programs.compile_evaluate(
            *shapes, validation, self.n_validation))

    def _record_epoch(self, epoch: int) -> None:
        self._save_last(epoch)
        self._write_records()

    def _write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json, keeping the figures `nntrain evaluate` recorded in it, also those
        it added while this run trains."""
        with exclusive(self.run.path / "metrics.json"):
            evaluations = (self.run.try_read_json("metrics.json") or {}).get("evaluations")
            if isinstance(evaluations, list) and evaluations:
                metrics = {**metrics, "evaluations": evaluations}
            atomic_write_json(self.run.path / "metrics.json", metrics)

    def _write_records(self) -> None:
        """history.csv, metrics.json and run.json's epoch count, from the history so far."""
        history = _rows(self.history)
        tracker = self.checkpointer.tracker
        metrics = {
            "monitor": tracker.monitor, "mode": tracker.mode,
            "best_epoch": None if tracker.best_epoch is None else tracker.best_epoch + 1,
            "best_value": tracker.best, "epochs_completed": len(history),
            "last": {k: v for k, v in history[-1].items() if k != "epoch"},
        }
        self._in_order("history.csv", write_history_csv, self.run.path / "history.csv", history)
        self._in_order("metrics.json", self._write_metrics, metrics)
        self._in_order("run.json", self.run.update_info, epochs_completed=len(history))
        if self.placement.is_primary:  # the other processes' runs are scratch copies
            self._in_order("history.png", self._drawer.request)  # after history.csv

    def result_so_far(self, status: str, reason: str | None) -> FitResult:
        """The figures of the epochs trained so far, as a result with this status."""
        return self._result(status, reason or "")

    def _stop_reason(self, epoch: int, done: int) -> str:
        early = any(isinstance(c, cb.EarlyStopping) and c.stopped_epoch == epoch
                    for c in self.callbacks)
        return f"{'early stopping' if early else 'a callback stopped training'} " + (
            f"after epoch {epoch + 1}" if done == self.steps_per_epoch
            else f"in epoch {epoch + 1} after step {done}")

    def _result(self, status: str, reason: str) -> FitResult:
        tracker = self.checkpointer.tracker
        return FitResult(status, self.history,
                         None if tracker.best_epoch is None else tracker.best_epoch + 1,
                         tracker.monitor, tracker.best, stop_reason=reason)

    def evaluate_test(self) -> dict[str, float] | None:
        """Test figures for the weights `evaluate` uses by default: the best checkpoint's.
        None without a test set, or when a signal (`stop_signal`) stopped it."""
        if self.dataset.test is None:
            return None
        weights = self.placement.replicate(self.best_weights or self.get_weights())
        release_freed_memory()  # training's buffers, before the test set's
        return self.programs.evaluate(weights["params"], weights["state"],
                                      place(self.dataset.test, self.placement,
                                            self.streaming),
                                      len(self.dataset.test),
                                      should_stop=self._stop_agreed)


def write_history_csv(path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    columns = list(history[0]) if history else ["epoch"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the history for the writer thread: rows of plain numbers (a deep copy of
    every row at every epoch cost seconds over hundreds of epochs)."""
    return [dict(row) for row in history]
