"""Callbacks as a user runs them: reduce_lr_on_plateau really lowers the rate (and keeps its
count across --resume), learning_rate_scheduler sets it each epoch, csv_logger writes its file
inside the run, a user's own callback class runs its hooks and can stop training."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
import yaml
from clirunner import nntrain
from pydantic import ValidationError
from rich.console import Console

from nntrain.config.callbacks import (
    CSVLoggerArgs,
    LearningRateSchedulerArgs,
    ReduceLROnPlateauArgs,
)
from nntrain.config.compile import SGDArgs
from nntrain.config.loader import load_config
from nntrain.custom import custom_names
from nntrain.optimizers import build_optimizer
from nntrain.train import callbacks as cb

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"
EXAMPLE = ROOT / "examples" / "custom_callback"




def tiny(folder: Path, callbacks, epochs: int = 4, optimizer=None) -> Path:
    """The tiny MLP with these callbacks, written into `folder` (where user modules go)."""
    data = yaml.safe_load(TINY.read_text())
    data["name"] = "cb"
    data["fit"].update(epochs=epochs, callbacks=callbacks, steps_per_execution=4)
    if optimizer is not None:
        data["compile"]["optimizer"] = optimizer
    path = folder / "cb.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def rates(run: Path) -> list[float]:
    return [float(row["learning_rate"]) for row in history(run)]


class FakeTrainer:
    """Just what the learning-rate callbacks touch: a real optimizer state."""

    def __init__(self, learning_rate: float) -> None:
        optimizer = build_optimizer("sgd", SGDArgs(learning_rate=learning_rate))
        self.carry = {"opt_state": optimizer.init({"w": jnp.zeros(2)})}
        self.stop_training, self.history, self.quiet = False, [], False
        self.console = Console(file=open(os.devnull, "w"))  # noqa: SIM115

    @property
    def lr(self) -> float:
        return cb.get_lr(self)


# -- reduce_lr_on_plateau ----------------------------------------------------------------------
def keras_reduce_lr_on_plateau(losses, lr, factor, patience, cooldown, min_lr, min_delta):
    """Keras 3's ReduceLROnPlateau.on_epoch_end, transcribed: the rate before each epoch."""
    best, wait, cooldown_counter, out = math.inf, 0, 0, []
    for current in losses:
        out.append(lr)
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if current < best - min_delta:
            best, wait = current, 0
        elif not cooldown_counter > 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr)
                cooldown_counter, wait = cooldown, 0
    return out


def test_reduce_lr_on_plateau_follows_keras_and_its_state_round_trips():
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    args = ReduceLROnPlateauArgs(monitor="loss", factor=0.5, patience=2, cooldown=1,
                                 min_lr=0.02)
    expected = keras_reduce_lr_on_plateau(losses, 0.1, 0.5, 2, 1, 0.02, 1e-4)
    assert min(expected) == pytest.approx(0.02) and len(set(expected)) > 3

    trainer, callback = FakeTrainer(0.1), cb.ReduceLROnPlateau(args)
    seen = []
    for epoch, loss in enumerate(losses):
        seen.append(trainer.lr)
        callback.on_epoch_end(epoch, {"loss": loss}, trainer)
    assert seen == pytest.approx(expected, rel=1e-6)

    # interrupted after each epoch: a new callback from the saved (JSON) state goes on alike
    for cut in range(1, len(losses)):
        trainer, callback = FakeTrainer(0.1), cb.ReduceLROnPlateau(args)
        seen = []
        for epoch, loss in enumerate(losses):
            if epoch == cut:
                state = json.loads(json.dumps(callback.state()))
                callback = cb.ReduceLROnPlateau(args)
                callback.load_state(state)
            seen.append(trainer.lr)
            callback.on_epoch_end(epoch, {"loss": loss}, trainer)
        assert seen == pytest.approx(expected, rel=1e-6), cut


def test_reduce_lr_on_plateau_args_are_keras():
    args = ReduceLROnPlateauArgs()
    assert (args.monitor, args.factor, args.patience, args.mode, args.min_delta, args.cooldown,
            args.min_lr) == ("val_loss", 0.1, 10, "auto", 1e-4, 0, 0.0)
    with pytest.raises(ValidationError):
        ReduceLROnPlateauArgs(factor=1.0)


def test_plateau_lowers_the_rate_csv_logger_writes_and_resume_keeps_both(tmp_path: Path):
    # loss never improves by 10: after the first epoch, every epoch is a plateau
    config = tiny(tmp_path, [
        {"reduce_lr_on_plateau": {"monitor": "loss", "min_delta": 10, "patience": 1,
                                  "factor": 0.5, "verbose": 1}},
        {"csv_logger": {"filename": "logs/train.csv", "separator": ";"}},
    ], optimizer={"adam": 0.01})
    first = nntrain("fit", str(config), "--epochs", "2", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.005." in first.output
    run = next(tmp_path.glob("runs/cb/*"))
    assert rates(run) == pytest.approx([0.01, 0.01], rel=1e-6)

    # resumed, the callback goes on counting from its saved state: a fresh one would take
    # epoch 3 as its first (an improvement) and not reduce
    resumed = nntrain("fit", "--resume", str(run), "--epochs", "4", "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert rates(run) == pytest.approx([0.01, 0.01, 0.005, 0.0025], rel=1e-6)

    with (run / "logs" / "train.csv").open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert rows[0] == ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2", "3"]  # Keras's epochs, from 0
    for row, kept in zip(rows[1:], history(run), strict=True):
        assert float(row[3]) == pytest.approx(float(kept["loss"]), rel=1e-5)
        assert float(row[2]) == pytest.approx(float(kept["learning_rate"]), rel=1e-5)


def test_csv_logger_append_and_resume_truncation(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "log.csv").write_text("epoch,loss\n0,1.0\n")
    trainer = FakeTrainer(0.1)
    logger = cb.CSVLogger(CSVLoggerArgs(filename="log.csv", append=True), run_dir)
    logger.on_train_begin(trainer)
    logger.on_epoch_end(0, {"loss": 0.5}, trainer)
    assert (run_dir / "log.csv").read_text() == "epoch,loss\n0,1.0\n0,0.5\n"

    fresh = cb.CSVLogger(CSVLoggerArgs(filename="log.csv"), run_dir)  # append: false
    fresh.on_train_begin(trainer)
    fresh.on_epoch_end(0, {"loss": 0.25, "acc": 0.5}, trainer)
    fresh.on_epoch_end(1, {"loss": 0.125, "acc": 0.75}, trainer)
    state = fresh.state()
    fresh.on_epoch_end(2, {"loss": 0.0625, "acc": 0.875}, trainer)  # then killed
    resumed = cb.CSVLogger(CSVLoggerArgs(filename="log.csv"), run_dir)
    resumed.load_state(state)
    resumed.on_train_begin(trainer)
    resumed.on_epoch_end(2, {"loss": 0.0625, "acc": 0.875}, trainer)
    assert (run_dir / "log.csv").read_text() == \
        "epoch,acc,loss\n0,0.5,0.25\n1,0.75,0.125\n2,0.875,0.0625\n"


@pytest.mark.parametrize(("filename", "message"), [
    ("/tmp/train.csv", "relative to the run directory"),
    ("../train.csv", "inside the run directory"),
    ("logs/../../train.csv", "inside the run directory"),
    ("history.csv", "history.csv is the run's own"),
    ("checkpoints/log.csv", "checkpoints is the run's own"),
    ("HISTORY.CSV", "HISTORY.CSV is the run's own"),  # one file where case is folded
    (".metrics.json.lock", "hidden names (starting with '.') are the run's own"),
])
def test_csv_logger_stays_inside_the_run_directory(tmp_path: Path, filename, message):
    config = tiny(tmp_path, [{"csv_logger": filename}])
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "fit.callbacks[0].csv_logger.filename" in result.output and message in result.output


# -- model_checkpoint ----------------------------------------------------------------------------
def test_model_checkpoint_filepath_takes_keras_fields(tmp_path: Path):
    config = tiny(tmp_path, [{"model_checkpoint": {
        "save_best_only": False, "filepath": "weights.{epoch:02d}-{val_loss:.2f}"}}], epochs=2)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    rows = history(run)
    expected = {f"weights.{e:02d}-{float(rows[e - 1]['val_loss']):.2f}" for e in (1, 2)}
    saved = {p.name for p in (run / "checkpoints").iterdir()}
    assert expected <= saved and {"best", "last"} <= saved


@pytest.mark.parametrize(("filepath", "message"), [
    ("best", "a name nntrain keeps for itself"),
    ("last.prev", "a name nntrain keeps for itself"),
    (".old-best", "a name nntrain keeps for itself"),
    ("last.damaged", "a name nntrain keeps for itself"),
    ("e{0}", "'{0}' is not a field name"),
    ("e{val_los:.2f}", "'val_los' is not a logged figure"),
    ("e{val_loss:03d}", "a format spec does not fit its value"),
    ("e{epoch", "not a valid pattern"),
    ("../e{epoch}", "should match pattern"),
    # a character per epoch: '.' at 46 would replace checkpoints/, '/' at 47 leave it
    ("{epoch:c}", "it makes '.' at epoch 46, which is not a plain folder name"),
    ("e{epoch:c}", "it makes 'e/' at epoch 47"),
])
def test_model_checkpoint_filepath_errors_before_training(tmp_path: Path, filepath, message):
    """Each of these once trained an epoch and then crashed, or overwrote checkpoints/best
    or the resume fallback."""
    config = tiny(tmp_path, [{"model_checkpoint": {"save_best_only": False,
                                                   "filepath": filepath}}])
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "fit.callbacks[0].model_checkpoint.filepath" in said
    assert message in said and "Traceback" not in said
    assert not (tmp_path / "runs").exists()


# -- learning_rate_scheduler -------------------------------------------------------------------
def test_learning_rate_scheduler_with_a_declared_schedule_of_epochs():
    args = LearningRateSchedulerArgs(schedule={"exponential_decay": {
        "initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5}})
    trainer, callback = FakeTrainer(0.01), cb.LearningRateScheduler(args)
    seen = []
    for epoch in range(5):
        callback.on_epoch_begin(epoch, trainer)
        seen.append(trainer.lr)
    assert seen == pytest.approx([0.1 * 0.5 ** (e / 2) for e in range(5)], rel=1e-6)


def test_learning_rate_scheduler_takes_keras_one_argument_functions_too():
    def by_epoch(epoch):
        return 0.1 / (epoch + 1)

    args = LearningRateSchedulerArgs(schedule="m:by_epoch")
    trainer, callback = FakeTrainer(0.01), cb.LearningRateScheduler(args, by_epoch)
    for epoch in range(3):
        callback.on_epoch_begin(epoch, trainer)
        assert trainer.lr == pytest.approx(0.1 / (epoch + 1))
    callback = cb.LearningRateScheduler(args, lambda epoch, lr: float("nan"))
    with pytest.raises(cb.UserError, match="finite number"):
        callback.on_epoch_begin(0, trainer)


def test_learning_rate_scheduler_function_sets_each_epochs_rate(tmp_path: Path):
    (tmp_path / "sched.py").write_text(
        "def halve(epoch, lr):\n    return lr if epoch == 0 else lr * 0.5\n")
    config = tiny(tmp_path, [{"learning_rate_scheduler": "sched:halve"}], epochs=3,
                  optimizer={"sgd": 0.2})
    loaded = load_config(config)
    assert custom_names(loaded.config) == ["sched:halve"]  # --trust-code guards it
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/cb/*"))
    assert rates(run) == pytest.approx([0.2, 0.1, 0.05], rel=1e-6)
    sys.modules.pop("sched", None)
    refused = nntrain("fit", "--resume", str(run), "--epochs", "4", cwd=tmp_path)
    assert refused.exit_code == 2 and "sched:halve" in refused.output
    assert "--trust-code" in refused.output


def test_a_second_model_checkpoint_writes_its_own_folder_not_best(tmp_path: Path):
    config = tiny(tmp_path, [
        {"model_checkpoint": {"monitor": "val_accuracy", "save_best_only": True}},
        {"model_checkpoint": {"monitor": "loss", "save_best_only": True,
                              "filepath": "lowest-loss"}}], epochs=4)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/cb/*"))
    rows = history(run)
    metrics = json.loads((run / "metrics.json").read_text())
    best = json.loads((run / "checkpoints/best/checkpoint.json").read_text())
    accuracies = [float(r["val_accuracy"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    assert metrics["monitor"] == "val_accuracy"
    assert best["epoch"] == metrics["best_epoch"] == accuracies.index(max(accuracies)) + 1
    lowest = json.loads((run / "checkpoints/lowest-loss/checkpoint.json").read_text())
    assert lowest["epoch"] == losses.index(min(losses)) + 1


def test_mode_auto_maximises_a_renamed_accuracy_as_keras_does(tmp_path: Path):
    """Keras asks the metric object its direction: `accuracy: {name: hits}` is maximised,
    though its name does not say so."""
    config = tiny(tmp_path, [
        {"model_checkpoint": {"monitor": "val_hits", "save_best_only": True}},
        {"reduce_lr_on_plateau": {"monitor": "val_hits", "patience": 1, "factor": 0.5}}],
        epochs=4)
    data = yaml.safe_load(config.read_text())
    data["compile"]["metrics"] = [{"accuracy": {"name": "hits"}}]
    config.write_text(yaml.safe_dump(data))
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/cb/*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["monitor"], metrics["mode"]) == ("val_hits", "max")
    hits = [float(r["val_hits"]) for r in history(run)]
    assert metrics["best_epoch"] == hits.index(max(hits)) + 1


def test_mode_auto_knows_a_repeated_renamed_metric_by_its_suffixed_name():
    """Two metrics named `hits` log as hits and hits_1 (Keras's suffix): each keeps its own
    kind's direction, and a loss-like figure stays minimised."""
    from nntrain.build import prepare
    from nntrain.config.loader import load_config

    loaded = load_config(TINY, ["compile.metrics=[{accuracy: {name: hits}}, "
                                "{sparse_top_k_categorical_accuracy: {name: hits, k: 2}}, "
                                "{mae: {name: gap}}]"])
    setup = prepare(loaded)
    assert setup.log_names() == ["loss", "hits", "hits_1", "gap"]
    assert [setup.monitor_mode(m, "auto") for m in ("val_hits", "val_hits_1", "hits_1",
                                                     "val_gap", "val_loss")] == \
        ["max", "max", "max", "min", "min"]


def test_each_early_stopping_keeps_its_own_best_weights_in_the_resume_checkpoint(tmp_path: Path):
    from nntrain import checkpoint

    config = tiny(tmp_path, [
        {"early_stopping": {"monitor": "val_loss", "patience": 9, "restore_best_weights": True}},
        {"early_stopping": {"monitor": "loss", "patience": 9}},
        {"early_stopping": {"monitor": "val_accuracy", "patience": 9,
                            "restore_best_weights": True}}], epochs=3)
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = next(tmp_path.glob("runs/cb/*"))
    arrays, _ = checkpoint.load(run / "checkpoints" / "last")
    kept = {k.split("/")[0] for k in arrays if k.startswith("early_stopping_best")}
    assert kept == {"early_stopping_best_0", "early_stopping_best_2"}
    # checkpoints/best follows the first stopper's figure, val_loss: the same weights
    best, _ = checkpoint.load(run / "checkpoints" / "best")
    first = checkpoint.subtree(arrays, "early_stopping_best_0")
    assert first.keys() == best.keys()
    assert all((first[k] == best[k]).all() for k in best)


# -- a user's own callback ---------------------------------------------------------------------
def test_the_ratio_example_prints_once_per_epoch(tmp_path: Path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    assert len((folder / "ratio.py").read_text().strip().splitlines()) <= 10
    result = nntrain("fit", str(folder / "ratio.yaml"), "--epochs", "3", cwd=tmp_path)
    sys.modules.pop("ratio", None)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    printed = [line for line in lines if line.startswith("Epoch=")]
    assert [re.match(r"Epoch=(\d+), Val/Train=\d\.\d{3}$", p).group(1) for p in printed] \
        == ["0", "1", "2"]  # precision: 3 from the config reached __init__
    # as in Keras, each epoch's ratio comes right after that epoch's line
    for epoch in range(3):
        at = lines.index(printed[epoch])
        assert lines[at - 1].startswith(f"Epoch {epoch + 1}/3"), lines
    run = next(tmp_path.glob("runs/ratio/*"))
    rows = history(run)
    ratio = float(rows[0]["val_loss"]) / float(rows[0]["loss"])
    assert printed[0].endswith(f"{ratio:.3f}")


WATCH = '''
import json


class Watch:
    def __init__(self, stop_after, tag="watch"):
        self.stop_after, self.tag, self.events, self.refused = stop_after, tag, [], None

    def on_train_begin(self, logs):
        self.events.append(["train_begin", logs])

    def on_epoch_begin(self, epoch, logs):
        self.events.append(["epoch_begin", epoch])

    def on_train_batch_end(self, batch, logs):
        self.events.append(["batch", batch, sorted(logs)])
        try:  # mid-epoch, the weights live on the device
            self.model.get_weights()
        except Exception as e:
            self.refused = str(e)

    def on_epoch_end(self, epoch, logs):
        weights = self.model.get_weights()
        self.events.append(["epoch_end", epoch, sorted(weights["params"]),
                            self.model.optimizer.learning_rate])
        logs["loss"] = -1.0  # a copy: history.csv keeps the real figure
        if epoch + 1 == self.stop_after:
            self.model.stop_training = True

    def on_train_end(self, logs):
        self.events.append(["train_end", sorted(logs)])
        (self.model.run_dir / f"{self.tag}.json").write_text(
            json.dumps({"events": self.events, "refused": self.refused}))
'''


def test_a_user_callback_sees_every_hook_and_can_stop_training(tmp_path: Path):
    (tmp_path / "watch.py").write_text(WATCH)
    config = tiny(tmp_path, [{"watch:Watch": {"stop_after": 2, "tag": "seen"}}], epochs=10)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    sys.modules.pop("watch", None)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/cb/*"))
    assert json.loads((run / "run.json").read_text())["status"] == "stopped"
    rows = history(run)
    assert len(rows) == 2 and float(rows[0]["loss"]) > 0
    seen = json.loads((run / "seen.json").read_text())
    assert "get_weights() is not available in on_train_batch_end" in seen["refused"]
    events = seen["events"]
    names = ["loss", "accuracy"]
    # 16 steps an epoch, 4 per compiled call: on_train_batch_end after batches 3, 7, 11, 15
    epoch = [["batch", b, sorted(names)] for b in (3, 7, 11, 15)]
    params = ["dense", "dense_1"]
    assert events == [
        ["train_begin", {}],
        ["epoch_begin", 0], *epoch, ["epoch_end", 0, params, pytest.approx(0.01)],
        ["epoch_begin", 1], *epoch, ["epoch_end", 1, params, pytest.approx(0.01)],
        ["train_end", sorted(["loss", "accuracy", "val_loss", "val_accuracy",
                              "learning_rate"])],
    ]



STOPPER = '''
class StopMidEpoch:
    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.seen = epoch, batch, []

    def on_epoch_begin(self, epoch, logs):
        self.current = epoch

    def on_train_batch_end(self, batch, logs):
        self.seen.append([self.current, batch])
        if [self.current, batch] == [self.epoch, self.batch]:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs):
        self.seen.append(["end", epoch, sorted(logs)])

    def on_train_end(self, logs):
        import json
        (self.model.run_dir / "seen.json").write_text(json.dumps(self.seen))
'''


def test_stop_training_in_a_batch_hook_ends_the_epoch_there(tmp_path: Path):
    """As in Keras with steps_per_execution 4: the stop set after batch 7 of epoch 2 takes
    effect at once (no further chunk trains), validation and on_epoch_end still run."""
    (tmp_path / "stopper.py").write_text(STOPPER)
    # a rate that halves every step: the rate logged (the last step's) counts the steps
    config = tiny(tmp_path, [{"stopper:StopMidEpoch": {"epoch": 1, "batch": 7}}], epochs=5,
                  optimizer={"sgd": {"learning_rate": {"exponential_decay": {
                      "initial_learning_rate": 1.0, "decay_steps": 1, "decay_rate": 0.5}}}})
    result = nntrain("fit", str(config), cwd=tmp_path)
    sys.modules.pop("stopper", None)
    assert result.exit_code == 0, result.output
    assert "Epoch 2/5  8/16" in result.output  # the steps it ran
    run = next(tmp_path.glob("runs/cb/*"))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "stopped"
    assert "a callback stopped training in epoch 2 after step 8" in json.dumps(record)
    figures = ["accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    assert json.loads((run / "seen.json").read_text()) == [
        [0, 3], [0, 7], [0, 11], [0, 15], ["end", 0, figures],
        [1, 3], [1, 7], ["end", 1, figures]]
    # 16 steps, then 8: the last step trained is step 23 (from 0)
    assert rates(run) == pytest.approx([0.5 ** 15, 0.5 ** 23])


BROKEN = '''
class NoHooks:
    def __init__(self, x=1):
        self.x = x


class Takes:
    def __init__(self, patience):
        self.patience = patience

    def on_epoch_end(self, epoch, logs):
        pass
'''


def test_user_callback_problems_are_config_errors(tmp_path: Path):
    (tmp_path / "broken.py").write_text(BROKEN)
    config = tiny(tmp_path, [
        "no_such_module:Thing",
        {"broken:NoHooks": {"x": 2}},
        {"broken:Takes": {"patiense": 3}},
        "broken:Missing",
    ])
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    sys.modules.pop("broken", None)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "4 problems" in output
    assert "fit.callbacks[0].no_such_module:Thing: cannot import 'no_such_module'" in output
    assert "fit.callbacks[1].broken:NoHooks: broken:NoHooks is not a callback" in output
    assert "fit.callbacks[2].broken:Takes: broken:Takes does not take the argument " \
        "'patiense'; did you mean 'patience'?" in output
    assert "fit.callbacks[3].broken:Missing: module broken has no class 'Missing'" in output


@pytest.mark.parametrize(("monitor", "mode"), [
    ("val_loss", "min"), ("val_accuracy", "max"), ("val_auc", "max"), ("val_precision", "max"),
    ("out_recall", "max"), ("val_mae", "min"), ("val_top_k_categorical_accuracy", "max"),
    ("val_precision_1", "max"), ("val_auc_2", "max"), ("val_mae_1", "min")])
def test_auto_mode_follows_each_metrics_direction(monitor: str, mode: str):
    assert cb.resolve_mode(monitor, "auto") == mode


EDITS_WEIGHTS = """
import numpy as np


class ZeroACopy:
    \"\"\"Edits the dict get_weights returns, without set_weights: the model is untouched.\"\"\"

    def on_epoch_end(self, epoch, logs):
        weights = self.model.get_weights()
        for layer in weights["params"].values():
            for name in list(layer):
                layer[name] = np.zeros_like(layer[name])
"""


def test_editing_get_weights_leaves_the_best_weights_alone(tmp_path: Path):
    (tmp_path / "edits.py").write_text(EDITS_WEIGHTS)
    config = tiny(tmp_path, ["edits:ZeroACopy", {"early_stopping": {
        "monitor": "val_loss", "patience": 5, "restore_best_weights": True}}], epochs=3)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["loss"] < 1.05  # zeroed weights would give ln 3 = 1.0986 exactly
    assert abs(test["loss"] - math.log(3)) > 1e-3


BROKEN_CALLBACKS = """
class RaisesAtEpochEnd:
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("epoch end boom")


class Boom(RaisesAtEpochEnd):  # `:Boom:` is also rich's emoji code for an explosion
    pass


class KeepsAnObject:
    def on_epoch_end(self, epoch, logs=None):
        pass

    def state(self):
        return {"thing": object()}
"""


@pytest.mark.parametrize(("callback", "message"), [
    ("RaisesAtEpochEnd", "the callback broken:RaisesAtEpochEnd: on_epoch_end raised "
                         "RuntimeError: epoch end boom"),
    ("Boom", "the callback broken:Boom: on_epoch_end raised RuntimeError: epoch end boom"),
    ("KeepsAnObject", "the callback broken:KeepsAnObject: state() returned what JSON cannot "
                      "store"),
])
def test_what_a_callback_raises_is_reported_as_its_error(tmp_path: Path, callback, message):
    (tmp_path / "broken.py").write_text(BROKEN_CALLBACKS)
    config = tiny(tmp_path, [f"broken:{callback}"], epochs=3)
    result = nntrain("fit", str(config), cwd=tmp_path)
    sys.modules.pop("broken", None)
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert message in out and "Traceback" not in out
    run = next(tmp_path.glob("runs/cb/*"), None)
    if callback != "KeepsAnObject":  # epoch 1 was finished and kept: resume continues
        assert f"nntrain fit --resume {run.relative_to(tmp_path)} --trust-code" in out
        assert json.loads((run / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(("callbacks", "message"), [
    ([{"csv_logger": "log.csv"}, {"csv_logger": "log.csv"}],
     "fit.callbacks[0] writes to log.csv already; give each callback its own place"),
    ([{"csv_logger": "logs"}, {"csv_logger": "logs/epochs.csv"}],
     "fit.callbacks[0] writes to logs already"),
    ([{"tensorboard": "tb"}, {"csv_logger": "tb/train"}],  # the folder tensorboard fills
     "fit.callbacks[0] writes to tb already"),
])
def test_callbacks_writing_to_one_place_are_refused(tmp_path: Path, callbacks, message):
    result = nntrain("validate", str(tiny(tmp_path, callbacks)), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize(("stopper", "best_epoch"), [
    # no later epoch beats the first by 100: Keras restores the first epoch's weights
    ({"min_delta": 100, "patience": 2}, 1),
    # epochs before start_from_epoch are not candidates (val_loss falls: with mode max, the
    # first candidate stays the best)
    ({"start_from_epoch": 2, "patience": 5, "mode": "max"}, 3),
])
def test_the_best_checkpoint_follows_early_stoppings_rules(tmp_path: Path, stopper, best_epoch):
    """Without a model_checkpoint, checkpoints/best holds the weights restore_best_weights
    restores (Keras's model after fit), so the test figures and `evaluate` are theirs."""
    config = tiny(tmp_path, [{"early_stopping": {"monitor": "val_loss", **stopper,
                                                 "restore_best_weights": True}}], epochs=4)
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == best_epoch
    losses = [float(row["val_loss"]) for row in history(run)]
    assert min(losses) < losses[best_epoch - 1]  # a lower val_loss that is not the best
    best = nntrain("evaluate", str(run), "--split", "validation", "--json", cwd=tmp_path)
    assert best.exit_code == 0, best.output
    assert json.loads(best.output)["loss"] == pytest.approx(losses[best_epoch - 1], rel=1e-5)


def test_a_run_killed_after_early_stopping_ended_it_resumes_to_its_end(tmp_path: Path):
    """A kill between the last epoch's checkpoint and the run's records (in the test
    evaluation, say) leaves run.json at `running`: --resume finishes the run, it trains no
    further epoch."""
    config = tiny(tmp_path, [{"early_stopping": {"monitor": "val_loss", "mode": "max",
                                                 "patience": 1}}], epochs=6)
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    ended = json.loads((run / "run.json").read_text())
    assert (ended["status"], ended["stop_reason"]) == ("stopped", "early stopping after epoch 2")
    rows = (run / "history.csv").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics.pop("test")
    (run / "metrics.json").write_text(json.dumps(metrics))  # as a kill leaves them
    (run / "run.json").write_text(json.dumps({**ended, "status": "running", "stop_reason": None,
                                              "pid": 99999999}))
    result = nntrain("fit", "--resume", str(run), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "training ended by early stopping after epoch 2; finishing the run" \
        in " ".join(result.output.split())
    assert "Epoch 3" not in result.output
    assert (run / "history.csv").read_text() == rows
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["stop_reason"]) == ("stopped", "early stopping after epoch 2")
    assert json.loads((run / "metrics.json").read_text())["test"] == test


def test_verbose_callbacks_print_kerass_messages(tmp_path: Path):
    config = tiny(tmp_path, [
        {"early_stopping": {"monitor": "val_loss", "mode": "max", "patience": 1, "verbose": 1,
                            "restore_best_weights": True}},
        {"model_checkpoint": {"monitor": "val_loss", "mode": "max", "save_best_only": True,
                              "verbose": 1, "save_freq": "epoch"}}], epochs=4)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    first, second = (float(row["val_loss"]) for row in history(run))
    out = " ".join(result.output.split())
    assert f"Epoch 1: val_loss improved from -inf to {first:.5f}, saving model" in out
    assert f"Epoch 2: val_loss did not improve from {first:.5f}" in out
    assert "Epoch 2: early stopping Restoring model weights from the end of the best " \
        "epoch: 1." in out


def test_initial_value_threshold_is_the_value_to_beat(tmp_path: Path):
    config = tiny(tmp_path, [{"model_checkpoint": {
        "monitor": "val_loss", "save_best_only": True, "initial_value_threshold": 0.0}}])
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "cb").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] is None and metrics["best_value"] is None  # never beaten
    assert metrics["test_checkpoint"] == "last"  # the test figures are the last weights'
    assert not (run / "checkpoints" / "best").exists()
    # beaten: its epochs are the candidates as without it
    config = tiny(tmp_path, [{"model_checkpoint": {
        "monitor": "val_loss", "save_best_only": True, "initial_value_threshold": 10.0}}])
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = max((tmp_path / "runs" / "cb").iterdir())
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == 4
