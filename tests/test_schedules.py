"""Learning-rate schedules in the optimizer: Keras's formulas and optax's schedules agree with
what nntrain builds, the rate an update uses is the one the logs report, clipping still
clips, and bad schedules are config errors (exit 2)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from clirunner import nntrain
from pydantic import ValidationError

from nntrain.config.compile import AdamArgs, SGDArgs, is_schedule
from nntrain.optimizers import (
    ScheduledLearningRate,
    build_optimizer,
    build_schedule,
    get_learning_rate,
    has_schedule,
    set_learning_rate,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"
STEPS = [0, 1, 2, 5, 9, 10, 11, 19, 20, 21, 50, 99, 100, 101, 150, 500]




def schedule(entry: dict):
    return build_schedule(SGDArgs(learning_rate=entry).learning_rate)


def values(fn, steps=STEPS) -> np.ndarray:
    return np.array([float(fn(s)) for s in steps])


# -- each schedule against Keras's formula and optax's own schedule ----------------------------
@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_is_keras_and_optax(staircase):
    built = schedule({"exponential_decay": {"initial_learning_rate": 0.1, "decay_steps": 10,
                                            "decay_rate": 0.5, "staircase": staircase}})
    keras = [0.1 * 0.5 ** (math.floor(s / 10) if staircase else s / 10) for s in STEPS]
    np.testing.assert_allclose(values(built), keras, rtol=1e-6)
    reference = optax.exponential_decay(0.1, 10, 0.5, staircase=staircase)
    np.testing.assert_allclose(values(built), values(reference), rtol=1e-7)


def test_piecewise_constant_switches_after_each_boundary_as_keras_does():
    built = schedule({"piecewise_constant": {"boundaries": [10, 20], "values": [1.0, 0.5, 0.1]}})
    # Keras's PiecewiseConstantDecay: values[0] while step <= 10, values[1] while step <= 20
    keras = [1.0 if s <= 10 else 0.5 if s <= 20 else 0.1 for s in STEPS]
    np.testing.assert_allclose(values(built), keras, rtol=1e-7)
    reference = optax.piecewise_constant_schedule(1.0, {11: 0.5, 21: 0.2})
    np.testing.assert_allclose(values(built), values(reference), rtol=1e-6)


def test_cosine_decay_is_keras_with_and_without_warmup():
    built = schedule({"cosine_decay": {"initial_learning_rate": 0.1, "decay_steps": 100,
                                       "alpha": 0.1}})

    def keras_decay(step, decay_steps, initial, alpha):
        step = min(step, decay_steps)
        return initial * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay_steps)) + alpha)

    keras = [keras_decay(s, 100, 0.1, 0.1) for s in STEPS]
    np.testing.assert_allclose(values(built), keras, rtol=1e-5)
    np.testing.assert_allclose(values(built),
                               values(optax.cosine_decay_schedule(0.1, 100, 0.1)), rtol=1e-7)

    warm = schedule({"cosine_decay": {"initial_learning_rate": 0.0, "decay_steps": 100,
                                      "warmup_target": 0.2, "warmup_steps": 10}})

    def keras_warm(step):  # Keras 3's CosineDecay with warmup_target
        step = min(step, 100 + 10)
        if step < 10:
            return 0.0 + step / 10 * (0.2 - 0.0)
        return keras_decay(step - 10, 100, 0.2, 0.0)

    np.testing.assert_allclose(values(warm), [keras_warm(s) for s in STEPS], rtol=1e-5,
                               atol=1e-9)


def test_warmup_cosine_decay_and_one_cycle_are_optax():
    built = schedule({"warmup_cosine_decay": {"init_value": 0.01, "peak_value": 0.1,
                                              "warmup_steps": 10, "decay_steps": 100,
                                              "end_value": 0.001}})
    reference = optax.warmup_cosine_decay_schedule(0.01, 0.1, 10, 100, 0.001)
    np.testing.assert_allclose(values(built), values(reference), rtol=1e-7)
    assert float(built(10)) == pytest.approx(0.1)

    built = schedule({"one_cycle": {"transition_steps": 100, "peak_value": 0.5}})
    reference = optax.cosine_onecycle_schedule(100, 0.5, 0.3, 25.0, 1e4)
    np.testing.assert_allclose(values(built), values(reference), rtol=1e-7)
    assert float(built(0)) == pytest.approx(0.5 / 25) and float(built(30)) == pytest.approx(0.5)


# -- schedules inside the optimizer ------------------------------------------------------------
@pytest.mark.parametrize("clip", [{}, {"clipnorm": 0.5}, {"clipvalue": 0.3},
                                  {"global_clipnorm": 0.5}])
def test_each_update_uses_the_scheduled_rate_that_is_then_reported(clip):
    entry = {"exponential_decay": {"initial_learning_rate": 0.2, "decay_steps": 3,
                                   "decay_rate": 0.5}}
    optimizer = build_optimizer("sgd", SGDArgs(learning_rate=entry, **clip))
    reference = optax.exponential_decay(0.2, 3, 0.5)
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.array([3.0, -4.0, 0.0, 0.0])}  # norm 5
    if "clipnorm" in clip or "global_clipnorm" in clip:
        clipped = np.array([3.0, -4.0, 0, 0]) * 0.5 / 5
    elif "clipvalue" in clip:
        clipped = np.array([0.3, -0.3, 0, 0])
    else:
        clipped = np.array([3.0, -4.0, 0, 0])
    state = optimizer.init(params)
    assert has_schedule(state)
    for n in range(1, 8):
        updates, state = optimizer.update(grads, state, params)
        used = float(reference(n - 1))  # optax counts updates from 0
        np.testing.assert_allclose(np.asarray(updates["w"]), -used * clipped, rtol=1e-5,
                                   atol=1e-8)
        assert get_learning_rate(state) == pytest.approx(used, rel=1e-6)


def test_a_scheduled_rate_cannot_be_set_but_a_constant_can():
    params = {"w": jnp.zeros(2)}
    scheduled = build_optimizer("adam", AdamArgs(learning_rate={
        "cosine_decay": {"initial_learning_rate": 0.1, "decay_steps": 10}}))
    with pytest.raises(ScheduledLearningRate):
        set_learning_rate(scheduled.init(params), 0.5)
    args = SGDArgs(learning_rate={"constant": 0.05})
    assert not is_schedule(args.learning_rate)
    state = build_optimizer("sgd", args).init(params)
    assert not has_schedule(state) and get_learning_rate(state) == pytest.approx(0.05)
    assert get_learning_rate(set_learning_rate(state, 0.5)) == pytest.approx(0.5)


def test_schedule_state_survives_a_checkpoint_round_trip():
    from nntrain import checkpoint

    optimizer = build_optimizer("sgd", SGDArgs(learning_rate={
        "piecewise_constant": {"boundaries": [2], "values": [0.1, 0.01]}}))
    params = {"w": jnp.zeros(2)}
    state = optimizer.init(params)
    for _ in range(3):
        _, state = optimizer.update({"w": jnp.ones(2)}, state, params)
    restored = checkpoint.unflatten(optimizer.init(params), checkpoint.flatten(state), "test")
    _, after = optimizer.update({"w": jnp.ones(2)}, jax.device_put(restored), params)
    assert get_learning_rate(after) == pytest.approx(0.01)  # step 3 > boundary 2


# -- config errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(("schedule_entry", "message"), [
    ({"piecewise_constant": {"boundaries": [10, 20], "values": [1.0, 0.5]}},
     "2 boundaries need 3 values"),
    ({"piecewise_constant": {"boundaries": [20, 10], "values": [1.0, 0.5, 0.1]}},
     "boundaries must increase"),
    ({"warmup_cosine_decay": {"peak_value": 0.1, "warmup_steps": 100, "decay_steps": 50}},
     "must be greater than warmup_steps"),
    ({"cosine_decay": {"initial_learning_rate": 0.1, "decay_steps": 10, "warmup_steps": 5}},
     "warmup_steps needs warmup_target"),
    ({"exponential_decay": {"initial_learning_rate": 0.1, "decay_steps": 0, "decay_rate": 0.9}},
     "greater than 0"),
    ({"one_cycle": {"transition_steps": 100, "peak_value": 0.1, "pct_start": 1.5}},
     "less than 1"),
])
def test_bad_schedules_are_validation_errors(schedule_entry, message):
    with pytest.raises(ValidationError, match=message):
        SGDArgs(learning_rate=schedule_entry)


def tiny(tmp_path: Path, optimizer, callbacks=(), epochs: int = 3) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["name"] = "sched"
    data["compile"]["optimizer"] = optimizer
    data["fit"]["epochs"] = epochs
    data["fit"]["callbacks"] = list(callbacks)
    data["fit"]["steps_per_execution"] = 4  # compiles faster than 8
    path = tmp_path / "sched.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_bad_schedules_exit_2_with_locations_and_nothing_on_disk(tmp_path: Path):
    config = tiny(tmp_path, {"sgd": {"learning_rate": {"exponential_dcay": {
        "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5}}}})
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "compile.optimizer.sgd.learning_rate: unknown schedule 'exponential_dcay'" \
        in result.output
    assert "did you mean 'exponential_decay'" in result.output
    assert not (tmp_path / "runs").exists()

    config = tiny(tmp_path, {"adam": {"learning_rate": {"piecewise_constant": {
        "boundaries": [100], "values": [0.1, 0.01, 0.001]}}}})
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "sched.yaml:" in result.output
    assert "compile.optimizer.adam.learning_rate.piecewise_constant:" in result.output
    assert "1 boundaries need 2 values, found 3" in result.output

    config = tiny(tmp_path, {"sgd": {"learning_rate": {"cosine_decay": {
        "initial_learning_rate": 0.1, "decay_step": 10}}}})
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "learning_rate.cosine_decay.decay_step: unknown key 'decay_step'; did you mean " \
           "'decay_steps'?" in result.output


def test_reduce_lr_on_plateau_with_a_schedule_is_refused(tmp_path: Path):
    config = tiny(tmp_path, {"sgd": {"learning_rate": {"cosine_decay": {
        "initial_learning_rate": 0.1, "decay_steps": 10}}}},
        callbacks=[{"reduce_lr_on_plateau": {"patience": 1}}])
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "fit.callbacks[0].reduce_lr_on_plateau" in result.output
    assert "is a schedule (cosine_decay)" in result.output


# -- the acceptance test: history.csv against optax ----------------------------------------------
def test_history_reports_the_scheduled_rate_each_epoch_across_a_resume(tmp_path: Path):
    decay = {"initial_learning_rate": 0.05, "decay_steps": 10, "decay_rate": 0.5}
    config = tiny(tmp_path, {"sgd": {"learning_rate": {"exponential_decay": decay},
                                     "momentum": 0.9, "global_clipnorm": 1.0}})
    assert nntrain("fit", str(config), "--epochs", "1", "-q", cwd=tmp_path).exit_code == 0
    run = next(tmp_path.glob("runs/sched/*"))
    # the schedule's step count is in the optimizer state: resuming continues the schedule
    resumed = nntrain("fit", "--resume", str(run), "--epochs", "3", "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    rows = list(csv.DictReader((run / "history.csv").open()))
    steps_per_epoch = math.ceil(500 / 32)  # 600 examples, the last 100 for validation
    reference = optax.exponential_decay(0.05, 10, 0.5)
    # the rate the epoch's last step used: optax's schedule at that step's count (from 0)
    expected = [float(reference(steps_per_epoch * (e + 1) - 1)) for e in range(3)]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected, rtol=1e-5)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
