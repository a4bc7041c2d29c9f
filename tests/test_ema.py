"""An optimizer's `use_ema` and the swap_ema_weights callback, against Keras 3.15.1's numbers
for the same model, data and steps (a Dense(1) with ones for its kernel, SGD at 0.1,
ema_momentum 0.8, batches of 2 in order, 2 epochs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from clirunner import nntrain
from runfiles import history_rows, only_run
from safetensors.numpy import load_file

from nntrain.optimizers import keras_ema

CONFIG = """\
name: ema
seed: 0
data: {train: d.npz, validation: {path: v.npz}}
model:
  input: [2]
  layers:
    - dense: {units: 1, kernel_initializer: ones}
compile:
  loss: mse
  optimizer: {sgd: {learning_rate: 0.1, use_ema: true, ema_momentum: 0.8}}
fit:
  epochs: 2
  batch_size: 2
  shuffle: false
  callbacks:
"""

# Keras's weights (kernel, bias) as fit ends: the moving average, and each epoch's own
KERAS_FINAL = ([0.3945980966091156, 0.35663363337516785], [-0.3037169873714447])
KERAS_EPOCH_1 = ([0.265531986951828, 0.18335366249084473], [-0.6574274897575378])
KERAS_EPOCH_2 = ([0.06103183701634407, -0.0037929837126284838], [-0.5185993313789368])
KERAS_AVERAGE_EPOCH_1 = ([0.7583520412445068, 0.7475402355194092], [-0.086495541036129])
# with ema_overwrite_frequency: 3
KERAS_FINAL_OVERWRITING = ([0.4573615789413452, 0.42519038915634155], [-0.25737035274505615])
KERAS_EPOCH_2_OVERWRITING = ([0.15732748806476593, 0.08598634600639343], [-0.5707302093505859])


def _project(tmp_path: Path, callbacks: str = "    []\n") -> Path:
    x = np.arange(16, dtype=np.float32).reshape(8, 2) / 8 - 0.5
    y = x @ np.array([[1.5], [-2.0]], np.float32) + 0.25
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savez(tmp_path / "v.npz", x=x[:4] * 2, y=y[:4] + 0.5)
    config = tmp_path / "ema.yaml"
    config.write_text(CONFIG + callbacks)
    return config


def _weights(run: Path, name: str) -> tuple[list[float], list[float]]:
    arrays = load_file(run / "checkpoints" / name / "arrays.safetensors")
    return (arrays["params/dense/kernel"].ravel().tolist(),
            arrays["params/dense/bias"].ravel().tolist())


def _close(weights, expected) -> None:
    for got, want in zip(weights, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize(("overwrite", "final", "epoch_2"), [
    (None, KERAS_FINAL, KERAS_EPOCH_2),
    (3, KERAS_FINAL_OVERWRITING, KERAS_EPOCH_2_OVERWRITING)])
def test_training_ends_on_the_moving_average_as_keras_fit_does(tmp_path: Path, overwrite,
                                                               final, epoch_2):
    config = _project(tmp_path, "    - model_checkpoint: {save_best_only: false}\n")
    args = ["fit", str(config), "-q"]
    if overwrite:
        args += ["--set", f"compile.optimizer.sgd.ema_overwrite_frequency={overwrite}"]
    result = nntrain(*args, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    _close(_weights(run, "last"), final)  # what evaluate --checkpoint last reads
    _close(_weights(run, "epoch-002"), epoch_2)  # a checkpoint keeps the weights themselves
    losses = [float(row["loss"]) for row in history_rows(run)]
    expected = [1.890045166015625, 0.35013213753700256] if overwrite is None else \
        [2.8391404151916504, 0.7879819869995117]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


@pytest.mark.parametrize(("overwrite", "final", "losses"), [
    (None, ([0.6060628890991211, 0.5742052793502808], [-0.2548610270023346]),
     [3.0724360942840576, 0.8129129409790039]),
    (3, ([0.7216516733169556, 0.6986274123191833], [-0.18419428169727325]),
     [3.0724360942840576, 2.0254549980163574])])
def test_accumulating_gradients_the_average_counts_updates_as_keras_does(
        tmp_path: Path, overwrite, final, losses):
    """Keras's EMA follows `iterations`, its count of updates: with 2 batches to an update
    the average copies the weights for the first 2 batches, and an overwrite lasts both
    batches of the update it falls on."""
    config = _project(tmp_path)
    sets = ["compile.optimizer.sgd.gradient_accumulation_steps=2"] + (
        [f"compile.optimizer.sgd.ema_overwrite_frequency={overwrite}"] if overwrite else [])
    result = nntrain("fit", str(config), "-q", *(a for s in sets for a in ("--set", s)),
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    _close(_weights(run, "last"), final)
    np.testing.assert_allclose([float(row["loss"]) for row in history_rows(run)], losses,
                               rtol=1e-5)


def test_swap_ema_weights_validates_on_the_average(tmp_path: Path):
    config = _project(tmp_path, "    - swap_ema_weights\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    val = [float(row["val_loss"]) for row in history_rows(run)]
    np.testing.assert_allclose(val, [1.6667091846466064, 1.2442376613616943], rtol=1e-5)
    _close(_weights(run, "last"), KERAS_FINAL)  # training itself is the same
    # the last epoch's validation ran on the average training ends with
    result = nntrain("evaluate", str(run), "--checkpoint", "last", "--split", "validation",
                     "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss"] == pytest.approx(val[-1], rel=1e-5)


def test_without_swapping_validation_sees_the_weights_themselves(tmp_path: Path):
    config = _project(tmp_path)
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    val = [float(row["val_loss"]) for row in history_rows(only_run(tmp_path))]
    np.testing.assert_allclose(val, [1.8072326183319092, 1.2314980030059814], rtol=1e-5)


def test_swap_on_epoch_has_the_callbacks_after_it_keep_the_average(tmp_path: Path):
    config = _project(tmp_path, "    - swap_ema_weights: {swap_on_epoch: true}\n"
                                "    - model_checkpoint: {save_best_only: false}\n")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = only_run(tmp_path)
    _close(_weights(run, "epoch-001"), KERAS_AVERAGE_EPOCH_1)
    _close(_weights(run, "epoch-002"), KERAS_FINAL)
    _close(_weights(run, "last"), KERAS_FINAL)


def test_swap_ema_weights_without_use_ema_is_a_config_error(tmp_path: Path):
    config = _project(tmp_path, "    - swap_ema_weights\n")
    result = nntrain("validate", str(config), "--set",
                     "compile.optimizer.sgd.use_ema=false", cwd=tmp_path)
    assert result.exit_code == 2
    assert "fit.callbacks[0].swap_ema_weights" in result.output
    assert "compile.optimizer.sgd.use_ema: true" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ema_momentum", "1.5", "less than or equal to 1"),
    ("ema_overwrite_frequency", "0", "greater than 0")])
def test_bad_ema_settings_are_config_errors(tmp_path: Path, key, value, message):
    config = _project(tmp_path)
    result = nntrain("validate", str(config), "--set", f"compile.optimizer.sgd.{key}={value}",
                     cwd=tmp_path)
    assert result.exit_code == 2
    assert f"compile.optimizer.sgd.{key}" in result.output and message in result.output


def test_the_average_by_hand():
    """The first step copies the weights; then average = m * average + (1 - m) * weights;
    overwriting, every 2nd step's weights become the average."""
    ema = keras_ema(optax.sgd(1.0), 0.5, overwrite_every=2)
    params = jnp.array([4.0])
    state = ema.init(params)
    seen = []
    for grad in (1.0, 1.0, 2.0):
        step, state = ema.update(jnp.array([grad]), state, params)
        params = optax.apply_updates(params, step)
        seen.append((float(params[0]), float(state.average[0])))
    # 4 - 1 = 3, average 3; 3 - 1 = 2, average 2.5, overwritten: 2.5; 2.5 - 2 = 0.5,
    # average 0.5 * 2.5 + 0.5 * 0.5 = 1.5
    assert seen == [(3.0, 3.0), (2.5, 2.5), (0.5, 1.5)]


STOPPER = """\
import os
import signal


class StopOnce:
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0 and os.environ.get("STOP_AFTER_EPOCH_1"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
"""


def test_an_interrupted_run_resumes_to_the_same_average(tmp_path: Path, monkeypatch):
    """An interruption is not the end of training: the weights stay themselves, and the
    average goes on from the checkpoint's."""
    results = {}
    for name, stop in (("whole", False), ("stopped", True)):
        folder = tmp_path / name
        folder.mkdir()
        config = _project(folder, "    - stopper:StopOnce\n")
        (folder / "stopper.py").write_text(STOPPER)
        sys.modules.pop("stopper", None)
        if stop:
            monkeypatch.setenv("STOP_AFTER_EPOCH_1", "1")
        result = nntrain("fit", str(config), "-q", cwd=folder)
        if stop:
            assert result.exit_code == 130, result.output
            run = only_run(folder)
            _close(_weights(run, "last"), KERAS_EPOCH_1)  # not the average
            monkeypatch.delenv("STOP_AFTER_EPOCH_1")
            sys.modules.pop("stopper", None)
            result = nntrain("fit", "--resume", str(run), "--trust-code", "-q", cwd=folder)
        assert result.exit_code == 0, result.output
        results[name] = _weights(only_run(folder), "last")
    _close(results["whole"], KERAS_FINAL)
    assert results["stopped"] == results["whole"]
