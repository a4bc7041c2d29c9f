"""The compiled programs are built once: not per epoch, not per learning-rate change."""

from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path

import jax
import pytest
from clirunner import nntrain
from rich.console import Console
from runfiles import history_rows, only_run

from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.data.sources import load_dataset
from nntrain.optimizers import get_learning_rate, set_learning_rate
from nntrain.runs import create_run
from nntrain.train.fit import Fitter
from nntrain.train.programs import initialize

TINY = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"


class HalveRate:
    """Changes the learning rate after every epoch, as a scheduler callback would."""

    def on_train_begin(self, trainer): ...
    def on_epoch_begin(self, epoch, trainer): ...
    def on_train_end(self, trainer): ...
    def state(self): return {}
    def load_state(self, state): ...

    def on_epoch_end(self, epoch, logs, trainer):
        opt_state = trainer.carry["opt_state"]
        trainer.carry["opt_state"] = set_learning_rate(opt_state,
                                                       get_learning_rate(opt_state) / 2)


def test_each_program_compiles_once_across_epochs_and_rate_changes(tmp_path: Path):
    # 500 examples at batch 32 = 16 steps, the last one a partial batch
    loaded = load_config(TINY, ["fit.epochs=4", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    fitter.callbacks.insert(0, HalveRate())
    result = fitter.fit()
    rates = [row["learning_rate"] for row in result.history]  # the rate each epoch used
    assert rates == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    programs = fitter.programs
    assert programs._train_chunks and programs._eval_chunks
    for chunk in [*programs._train_chunks.values(), *programs._eval_chunks.values()]:
        assert chunk._cache_size() == 1


def _compile_log(caplog: pytest.LogCaptureFixture, run) -> list[logging.LogRecord]:
    """JAX's compile log records while `run()` runs, of every thread (jax.log_compiles()
    would log the calling thread's alone)."""
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            run()
    finally:
        jax.config.update("jax_log_compiles", False)
    return [r for r in caplog.records if "ompil" in r.getMessage()]


def test_the_validation_program_compiles_once_while_the_first_epoch_trains(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    loaded = load_config(TINY, ["fit.epochs=2", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    order: list[str] = []
    evaluate, compile_evaluate = fitter.programs.evaluate, fitter.programs.compile_evaluate
    threads: list[threading.Thread] = []
    fitter.programs.compile_evaluate = lambda *a: (
        order.append("compile"), threads.append(threading.current_thread()),
        compile_evaluate(*a))[2]
    fitter.programs.evaluate = lambda *a: (order.append("evaluate"), evaluate(*a))[1]
    # the validation program compiles on a thread of its own, beside the training program
    compiled = [r.getMessage() for r in _compile_log(caplog, fitter.fit)
                if r.getMessage().startswith("Finished XLA compilation of jit(_eval_chunk)")]
    assert order == ["compile", "evaluate", "evaluate"]  # during epoch 1, before its figures
    assert len(compiled) == 1, compiled
    # beside the training program's compile, not after it
    assert threads[0] is not threading.main_thread()


def test_the_first_programs_compile_once_beside_the_init_program(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The training chunk and the epoch's order compile on threads of their own, from the
    shapes of what they will be passed, while the init program compiles; the first epoch
    runs those programs, not others compiled again."""
    jax.clear_caches()  # epoch_order's program for these shapes, from the tests before
    loaded = load_config(TINY, ["fit.epochs=2", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    made: list[Fitter] = []

    def train():
        made.append(Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True),
                           True))
        # started as the fitter was made, before its init program ran
        assert made[0].programs._compiling and made[0]._order_compiled is not None
        made[0].fit()

    records = _compile_log(caplog, train)
    messages = [r.getMessage() for r in records]
    for program in ("_train_chunk", "epoch_order"):
        done = [r for r in records
                if r.getMessage().startswith(f"Finished XLA compilation of jit({program})")]
        assert len(done) == 1, messages
        assert done[0].threadName != threading.main_thread().name
    assert len(made[0].history) == 2 and made[0].programs._compiling == {}


def test_a_failed_compile_ahead_leaves_the_call_to_compile_its_program(tmp_path: Path):
    """An ahead compile that failed for a reason of its moment (a device short of memory)
    does not fail the run: the first call compiles the program itself."""
    loaded = load_config(TINY, ["fit.epochs=1", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    failed: Future = Future()
    failed.set_exception(RuntimeError("RESOURCE_EXHAUSTED: out of memory while compiling"))
    fitter.programs._compiling = dict.fromkeys(fitter.programs._compiling, failed)
    fitter._order_compiled = failed
    assert len(fitter.fit().history) == 1


def test_a_new_run_compiles_ahead_and_a_resumed_one_on_first_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A resumed run's checkpoint may end it at once (nothing left to train, or damaged):
    it must not wait for programs compiled ahead that it would never use."""
    started: list[Fitter] = []
    compile_ahead = Fitter._compile_ahead

    def recorded(self: Fitter) -> None:
        started.append(self)
        compile_ahead(self)

    monkeypatch.setattr(Fitter, "_compile_ahead", recorded)
    assert nntrain("fit", str(TINY), "-q", "--epochs", "1", cwd=tmp_path).exit_code == 0
    assert len(started) == 1
    run = only_run(tmp_path)
    resumed = nntrain("fit", "--resume", str(run), "--epochs", "2", "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert len(started) == 1 and len(history_rows(run)) == 2


def test_host_copies_of_the_data_are_let_go_once_on_the_device(tmp_path: Path):
    """On a CPU the device's memory is the same RAM: keeping the loaded arrays as well
    would hold the training data twice for the whole run."""
    loaded = load_config(TINY, ["fit.epochs=1", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    host = [weakref.ref(a) for split in (dataset.train, dataset.validation)
            for a in (*split.x.values(), *split.y.values())]
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    del dataset
    result = fitter.fit()
    assert len(result.history) == 1 and "val_loss" in result.history[0]
    assert fitter.evaluate_test() is not None  # the test split stays until it is used
    assert all(ref() is None for ref in host)


@pytest.mark.parametrize("seed", [0, 42, 2**31, 2**63 - 1])
def test_seed_keys_are_jaxs_own_derivation_for_every_allowed_seed(seed: int):
    """The keys come from one compiled program with the seed baked in (it may exceed
    int32): they must be exactly `fold_in(key(seed), i)`, as a user reproducing a run
    with JAX would compute them."""
    keys, *_ = initialize(prepare(load_config(TINY)), seed)
    root = jax.random.key(seed)
    for i, name in enumerate(("init", "order", "dropout")):
        assert (jax.random.key_data(keys[name]).tolist()
                == jax.random.key_data(jax.random.fold_in(root, i)).tolist())


def test_weights_come_to_the_host_once_an_epoch_however_many_callbacks_ask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Early stopping (restore_best_weights) and the checkpoint both want the weights in an
    improving epoch: one copy from the device serves both."""
    import nntrain.train.fit as fit_module

    loaded = load_config(TINY, ["fit.epochs=3"])  # both callbacks, val_loss improving
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    copies: list[int] = []
    real_fetch = fit_module.fetch

    def counting(tree):  # copies from the device, not the host arrays a save passes on
        if isinstance(tree, dict) and set(tree) == {"params", "state"} and any(
                isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(tree)):
            copies.append(1)
        return real_fetch(tree)

    monkeypatch.setattr(fit_module, "fetch", counting)
    result = fitter.fit()
    improving = sum(1 for i, row in enumerate(result.history)
                    if row["val_loss"] < min([r["val_loss"] for r in result.history[:i]],
                                             default=float("inf")))
    assert improving == 3
    assert len(copies) == 3  # not 6
    stopper = next(c for c in fitter.callbacks if type(c).__name__ == "EarlyStopping")
    assert stopper.best_weights is fitter.best_weights


def test_several_steps_per_loop_iteration_train_as_one_step_per_iteration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Accelerators run rolled loops several steps an iteration; the steps that do not fill
    an iteration run after it. 16 steps an epoch and 4 validation steps, 3 an iteration."""
    from nntrain.train import programs

    histories = []
    for unroll in (1, 3):
        monkeypatch.setattr(programs, "steps_per_iteration", lambda *_, u=unroll: u)
        loaded = load_config(TINY, ["fit.epochs=2", "fit.callbacks=[]"])
        setup = prepare(loaded)
        dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
        fitter = Fitter(setup, dataset, create_run(tmp_path, f"unroll{unroll}"),
                        Console(quiet=True), True)
        assert fitter.programs.unroll == unroll
        histories.append([{k: v for k, v in row.items() if k != "seconds"}
                          for row in fitter.fit().history])
        assert int(fitter.carry["step"]) == 32
    assert histories[1] == [pytest.approx(row, rel=1e-5) for row in histories[0]]


def test_accelerators_run_four_steps_an_iteration_unless_the_model_has_windows():
    from nntrain.train.programs import steps_per_iteration

    mlp = prepare(load_config(TINY))
    cnn = prepare(load_config(Path(__file__).resolve().parent / "configs" / "tiny_cnn.yaml"))
    assert steps_per_iteration(mlp, "gpu") == steps_per_iteration(mlp, "tpu") == 4
    assert steps_per_iteration(cnn, "gpu") == 1  # long steps: compile time would grow most
    assert steps_per_iteration(mlp, "cpu") == steps_per_iteration(cnn, "cpu") == 1


def test_a_resumed_epoch_counts_the_seconds_before_its_interruption(tmp_path: Path):
    """An epoch stopped mid-way and resumed: its seconds are both sessions' parts (the
    checkpoint's seconds so far, 100 here, plus the rest), and the fitter keeps the earlier
    part apart for `fit`'s "trained this command" line."""
    loaded = load_config(TINY, ["fit.epochs=2", "fit.callbacks=[]"])
    setup = prepare(loaded)
    dataset = load_dataset(loaded.config.data, setup.io, TINY.parent, loaded.config.seed)
    fitter = Fitter(setup, dataset, create_run(tmp_path, "tiny"), Console(quiet=True), True)
    fitter._resume_at = (0, None, 100.0)  # as restore() reads it from a mid-epoch checkpoint
    result = fitter.fit()
    assert 100.0 < result.history[0]["seconds"] < 160.0
    assert result.history[1]["seconds"] < 60.0  # the next epoch: its own time alone
    assert fitter.seconds_before_resume == 100.0
