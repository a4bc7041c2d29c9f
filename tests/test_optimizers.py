"""Optimizers: single steps against Keras's update rules, gradient clipping, and changing the
learning rate without recompiling."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from clirunner import nntrain
from pydantic import ValidationError

from nntrain.config.compile import AdamArgs, AdamWArgs, RMSpropArgs, SGDArgs
from nntrain.optimizers import build_optimizer, get_learning_rate, set_learning_rate

G1 = {"w": np.array([1.0, -2.0, 0.5], np.float32), "b": np.array([3.0], np.float32)}
G2 = {"w": np.array([0.5, 0.5, -1.0], np.float32), "b": np.array([-1.0], np.float32)}


def params():
    return {"w": jnp.array([0.1, 0.2, 0.3]), "b": jnp.array([0.0])}


def steps(optimizer, grads_list):
    """Apply the optimizer to each gradient in turn; return each step's updates."""
    p = params()
    state = optimizer.init(p)
    out = []
    for grads in grads_list:
        updates, state = optimizer.update(jax.tree.map(jnp.asarray, grads), state, p)
        p = optax.apply_updates(p, updates)
        out.append(jax.tree.map(np.asarray, updates))
    return out, state


def assert_tree_close(actual, expected, rtol=1e-6, atol=1e-7):
    assert set(actual) == set(expected)
    for k in expected:
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=atol, err_msg=k)


def tmap(fn, *trees):
    return {k: fn(*(t[k].astype(np.float64) for t in trees)) for k in trees[0]}


def test_sgd_step_is_minus_lr_times_gradient():
    (u1, u2), _ = steps(build_optimizer("sgd", SGDArgs(learning_rate=0.01)), [G1, G2])
    assert_tree_close(u1, tmap(lambda g: -0.01 * g, G1))
    assert_tree_close(u2, tmap(lambda g: -0.01 * g, G2))


def test_sgd_momentum_follows_keras():
    # Keras: v = momentum * v - lr * g; w += v
    (u1, u2), _ = steps(build_optimizer("sgd", SGDArgs(learning_rate=0.01, momentum=0.9)),
                        [G1, G2])
    v1 = tmap(lambda g: -0.01 * g, G1)
    v2 = tmap(lambda v, g: 0.9 * v - 0.01 * g, v1, G2)
    assert_tree_close(u1, v1)
    assert_tree_close(u2, v2)


def test_sgd_nesterov_follows_keras():
    # Keras: v = momentum * v - lr * g; w += momentum * v - lr * g
    opt = build_optimizer("sgd", SGDArgs(learning_rate=0.01, momentum=0.9, nesterov=True))
    (u1, u2), _ = steps(opt, [G1, G2])
    v1 = tmap(lambda g: -0.01 * g, G1)
    v2 = tmap(lambda v, g: 0.9 * v - 0.01 * g, v1, G2)
    assert_tree_close(u1, tmap(lambda v, g: 0.9 * v - 0.01 * g, v1, G1))
    assert_tree_close(u2, tmap(lambda v, g: 0.9 * v - 0.01 * g, v2, G2))


def test_weight_decay_on_sgd_momentum_follows_keras():
    """Keras 3 (optimizers/base_optimizer.py): `w -= w * weight_decay * lr` before each
    step, apart from the velocity (v = momentum * v - lr * g; w += v)."""
    opt = build_optimizer("sgd", SGDArgs(learning_rate=0.1, momentum=0.9, weight_decay=0.05))
    p = params()
    state = opt.init(p)
    w = {k: np.asarray(x, np.float64) for k, x in p.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for g in (G1, G2, G1):
        updates, state = opt.update(tmap(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, updates)
        for k in w:
            w[k] = w[k] - w[k] * 0.05 * 0.1
            v[k] = 0.9 * v[k] - 0.1 * g[k]
            w[k] = w[k] + v[k]
        assert_tree_close(p, w)
    # the velocity never holds the decay: the same run without it differs by the decay only
    plain, _ = steps(build_optimizer("sgd", SGDArgs(learning_rate=0.1, momentum=0.9)), [G1])
    decayed, _ = steps(opt, [G1])
    assert_tree_close(decayed[0], tmap(lambda u, x: u - 0.1 * 0.05 * x, plain[0],
                                       {k: np.asarray(x) for k, x in params().items()}))


def test_keras_options_nntrain_lacks_are_refused_by_name():
    with pytest.raises(ValidationError) as info:
        AdamArgs(loss_scale_factor=128.0)
    assert "nntrain does not support Keras's loss_scale_factor; leave it out" in str(info.value)
    AdamArgs(loss_scale_factor=None)  # Keras's saved default


def test_gradient_accumulation_follows_keras():
    """Keras 3 (optimizers/base_optimizer.py): gradients add up over N batches; the N-th
    applies their mean, clipped, with the learning rate the schedule gives at that batch's
    count; in between the weights and the momentum stay as they are."""
    every, lr0 = 3, 0.1
    schedule = {"exponential_decay": {"initial_learning_rate": lr0, "decay_steps": 2,
                                      "decay_rate": 0.5}}
    opt = build_optimizer("sgd", SGDArgs(learning_rate=schedule, momentum=0.9, clipnorm=2.0,
                                         gradient_accumulation_steps=every))
    grads = [G1, G2, G1, G1, G2, G2, G1]
    got, _ = steps(opt, grads)
    w = {k: np.asarray(x, np.float64) for k, x in params().items()}
    velocity = {k: np.zeros_like(x) for k, x in w.items()}
    total = {k: np.zeros_like(x) for k, x in w.items()}
    for batch, (g, update) in enumerate(zip(grads, got, strict=True)):
        total = {k: total[k] + g[k] for k in w}
        if (batch + 1) % every:
            assert_tree_close(update, tmap(np.zeros_like, w))  # nothing moves in between
            continue
        lr = lr0 * 0.5 ** (batch / 2)  # the schedule at the batch count, not the update count
        for k in w:
            mean = total[k] / every
            mean = mean * min(1.0, 2.0 / np.linalg.norm(mean))
            velocity[k] = 0.9 * velocity[k] - lr * mean
            np.testing.assert_allclose(update[k], velocity[k], rtol=1e-5, atol=1e-7, err_msg=k)
        total = {k: np.zeros_like(x) for k, x in w.items()}


def test_gradient_accumulation_takes_two_batches_or_more_as_keras():
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        SGDArgs(gradient_accumulation_steps=1)
    assert SGDArgs(gradient_accumulation_steps=None).gradient_accumulation_steps is None


def test_the_learning_rate_is_read_and_set_through_accumulation():
    opt = build_optimizer("adam", AdamArgs(learning_rate=0.01, gradient_accumulation_steps=2))
    state = opt.init(params())
    changed = set_learning_rate(state, 0.5)
    assert get_learning_rate(changed) == pytest.approx(0.5)
    assert get_learning_rate(state) == pytest.approx(0.01)
    assert jax.tree.structure(changed) == jax.tree.structure(state)


def test_adam_first_step_is_minus_lr_times_sign():
    (u1,), _ = steps(build_optimizer("adam", AdamArgs(learning_rate=0.002)), [G1])
    assert_tree_close(u1, tmap(lambda g: -0.002 * np.sign(g), G1), rtol=1e-5)


def test_rmsprop_follows_keras_with_epsilon_inside_the_root():
    # Keras 3: v = rho * v + (1 - rho) * g^2; w -= lr * g / sqrt(v + epsilon). Small
    # gradients show where epsilon goes: outside the root their first step would be ~lr.
    small = {"w": np.array([1e-4, 1e-3, 1e-1], np.float32), "b": np.array([-2e-4], np.float32)}
    opt = build_optimizer("rmsprop", RMSpropArgs(learning_rate=0.001))
    (u1, u2), _ = steps(opt, [small, G1])
    v1 = tmap(lambda g: 0.1 * g * g, small)
    v2 = tmap(lambda v, g: 0.9 * v + 0.1 * g * g, v1, G1)
    assert_tree_close(u1, tmap(lambda g, v: -0.001 * g / np.sqrt(v + 1e-7), small, v1),
                      rtol=1e-5)
    assert_tree_close(u2, tmap(lambda g, v: -0.001 * g / np.sqrt(v + 1e-7), G1, v2), rtol=1e-5)
    assert abs(float(u1["w"][0])) < 0.0004  # not ~lr, as with epsilon outside


# -- clipping ------------------------------------------------------------------------------

BIG = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([0.3, -0.4], np.float32)}


def clipped_gradient(**clip):
    """The gradient after clipping, read off one plain SGD step with learning rate 1."""
    opt = build_optimizer("sgd", SGDArgs(learning_rate=1.0, **clip))
    p = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    updates, _ = opt.update(jax.tree.map(jnp.asarray, BIG), opt.init(p), p)
    return {k: -np.asarray(v) for k, v in updates.items()}


def test_clipnorm_clips_each_weight_on_its_own():
    # |a| = 5 is clipped to 1; |b| = 0.5 is under the limit and kept
    assert_tree_close(clipped_gradient(clipnorm=1.0),
                      {"a": np.array([0.6, 0.8]), "b": np.array([0.3, -0.4])})


def test_global_clipnorm_scales_all_weights_together():
    norm = np.sqrt(25 + 0.25)
    assert_tree_close(clipped_gradient(global_clipnorm=1.0),
                      {"a": np.array([3.0, 4.0]) / norm, "b": np.array([0.3, -0.4]) / norm},
                      rtol=1e-5)


def test_clipvalue_clips_each_element():
    assert_tree_close(clipped_gradient(clipvalue=0.35),
                      {"a": np.array([0.35, 0.35]), "b": np.array([0.3, -0.35])})


def test_no_clipping_under_the_limits():
    assert_tree_close(clipped_gradient(clipnorm=10.0), BIG)
    assert_tree_close(clipped_gradient(clipvalue=10.0), BIG)


def test_only_one_kind_of_clipping_as_in_keras():
    with pytest.raises(ValidationError, match="give one of clipnorm, clipvalue and "
                                              "global_clipnorm, not clipnorm and clipvalue"):
        SGDArgs(clipnorm=1.0, clipvalue=0.5)


# -- the learning rate -------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [{}, {"clipnorm": 100.0}])
def test_learning_rate_round_trip(clip):
    opt = build_optimizer("sgd", SGDArgs(learning_rate=0.01, **clip))
    state = opt.init(params())
    assert get_learning_rate(state) == pytest.approx(0.01)
    state = set_learning_rate(state, 0.5)
    assert get_learning_rate(state) == pytest.approx(0.5)
    updates, state = opt.update(jax.tree.map(jnp.asarray, G1), state, params())
    assert_tree_close(jax.tree.map(np.asarray, updates), tmap(lambda g: -0.5 * g, G1))
    assert get_learning_rate(state) == pytest.approx(0.5)


@pytest.mark.parametrize(("name", "args"), [
    ("sgd", SGDArgs(learning_rate=0.01)),
    ("sgd", SGDArgs(learning_rate=0.01, momentum=0.9, nesterov=True)),
    ("adam", AdamArgs(learning_rate=0.01, clipnorm=1.0)),
])
def test_changing_the_learning_rate_does_not_recompile(name, args):
    opt = build_optimizer(name, args)
    traces = []

    @jax.jit
    def step(p, state, g):
        traces.append(1)  # runs only while tracing
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state

    p, state = params(), opt.init(params())
    g = jax.tree.map(jnp.asarray, G1)
    p, state = step(p, state, g)
    p, state = step(p, state, g)
    assert len(traces) == 1
    state = set_learning_rate(state, 0.001)
    before = jax.tree.map(np.asarray, p)
    p, state = step(p, state, g)
    assert len(traces) == 1
    assert step._cache_size() == 1
    assert get_learning_rate(state) == pytest.approx(0.001)
    if name == "sgd" and not args.momentum:  # the new rate is used
        assert_tree_close(tmap(lambda a, b: a - b, jax.tree.map(np.asarray, p), before),
                          tmap(lambda g: -0.001 * g, G1), rtol=1e-5)


def test_sgd_momentum_after_a_learning_rate_change_follows_keras():
    opt = build_optimizer("sgd", SGDArgs(learning_rate=0.01, momentum=0.9))
    p = params()
    state = opt.init(p)
    g = jax.tree.map(jnp.asarray, G1)
    _, state = opt.update(g, state, p)
    _, state = opt.update(g, state, p)
    state = set_learning_rate(state, 0.001)
    updates, _ = opt.update(g, state, p)
    v = tmap(lambda g: -0.01 * g, G1)
    v = tmap(lambda v, g: 0.9 * v - 0.01 * g, v, G1)
    v = tmap(lambda v, g: 0.9 * v - 0.001 * g, v, G1)  # -0.0181 g, not optax's -0.00271 g
    assert_tree_close(jax.tree.map(np.asarray, updates), v, rtol=1e-5)


def test_set_learning_rate_leaves_the_old_state_alone():
    opt = build_optimizer("sgd", SGDArgs(learning_rate=0.01))
    old = opt.init(params())
    new = set_learning_rate(old, 0.5)
    assert get_learning_rate(new) == pytest.approx(0.5)
    assert get_learning_rate(old) == pytest.approx(0.01)


def test_nadam_follows_keras_momentum_schedule():
    # Keras 3's Nadam, step by step in NumPy (keras/src/optimizers/nadam.py)
    b1, b2, eps, lr = 0.9, 0.999, 1e-7, 0.002
    grads = [G1, G2, G1]
    opt = build_optimizer("nadam", AdamArgs(learning_rate=lr))
    got, _ = steps(opt, grads)
    for name in G1:
        m = v = np.zeros_like(G1[name], np.float64)
        u_product, w = 1.0, np.zeros_like(m)
        for t, (g, update) in enumerate(zip([g[name] for g in grads], got, strict=True),
                                        start=1):
            u_t, u_next = b1 * (1 - 0.5 * 0.96 ** t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
            u_product *= u_t
            m, v = m + (g - m) * (1 - b1), v + (g * g - v) * (1 - b2)
            m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
            step = -lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
            np.testing.assert_allclose(np.asarray(update[name]), step, rtol=1e-5)
            w += step
    # Keras's first step is 1.063 lr (optax.nadam's, without the schedule: 1.47 lr)
    assert abs(float(got[0]["w"][0])) == pytest.approx(1.0628 * lr, rel=1e-3)


@pytest.mark.parametrize(("name", "args"), [
    ("adam", AdamArgs(learning_rate=0.002)),
    ("adam", AdamArgs(learning_rate=0.002, amsgrad=True)),
    ("adamw", AdamWArgs(learning_rate=0.002, weight_decay=0.1)),
    ("adamw", AdamWArgs(learning_rate=0.002, weight_decay=0.1, amsgrad=True)),
    ("adam", AdamArgs(learning_rate=0.002, weight_decay=0.1)),  # Keras 3: any optimizer
])
def test_adam_family_follows_keras_step_by_step(name, args):
    """Keras 3's Adam (keras/src/optimizers/adam.py) in NumPy: epsilon is added to sqrt(v)
    before the bias correction, which shows with gradients near epsilon."""
    b1, b2, eps, lr = 0.9, 0.999, 1e-7, 0.002
    small = {"w": np.array([1e-6, -3e-7, 2e-5], np.float32), "b": np.array([5e-7], np.float32)}
    grads = [small, G1, small, G2, small]
    opt = build_optimizer(name, args)
    p = params()
    state = opt.init(p)
    expected = {k: np.asarray(v, np.float64) for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in expected.items()}
    v = {k: np.zeros_like(x) for k, x in expected.items()}
    v_max = {k: np.zeros_like(x) for k, x in expected.items()}
    for t, g in enumerate(grads, start=1):
        updates, state = opt.update(tmap(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, updates)
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for k in expected:
            if args.weight_decay:  # Keras's _apply_weight_decay, before the step
                expected[k] = expected[k] - expected[k] * args.weight_decay * lr
            m[k] = m[k] + (g[k] - m[k]) * (1 - b1)
            v[k] = v[k] + (g[k] ** 2 - v[k]) * (1 - b2)
            v_max[k] = np.maximum(v_max[k], v[k])
            denominator = np.sqrt(v_max[k] if args.model_dump().get("amsgrad") else v[k]) + eps
            expected[k] = expected[k] - alpha * m[k] / denominator
        assert_tree_close(p, expected, rtol=2e-5)


# -- through the CLI ----------------------------------------------------------------------------
def accumulating_config(tmp_path: Path, name: str, batch_size: int, every: int | None) -> Path:
    data = yaml.safe_load((Path(__file__).parent / "configs" / "tiny_mlp.yaml").read_text())
    data["name"] = name
    data["model"]["layers"] = [layer for layer in data["model"]["layers"] if layer != {
        "dropout": 0.1}]
    data["compile"]["optimizer"] = {"adam": {"learning_rate": 0.01,
                                             "gradient_accumulation_steps": every}}
    data["fit"].update(batch_size=batch_size, shuffle=False, epochs=3, callbacks=[],
                       steps_per_execution=4)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def history(run: Path) -> np.ndarray:
    rows = list(csv.DictReader((run / "history.csv").open()))
    return np.array([[float(r[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
                     for r in rows])


def test_four_accumulated_batches_of_25_train_as_one_batch_of_100(tmp_path: Path):
    """The weights stay put within a window, so even the epoch's loss is the big batch's."""
    for name, batch_size, every in (("big", 100, None), ("small", 25, 4)):
        config = accumulating_config(tmp_path, name, batch_size, every)
        result = nntrain("fit", str(config), "-q", cwd=tmp_path)
        assert result.exit_code == 0, result.output
    big, = tmp_path.glob("runs/big/*")
    small, = tmp_path.glob("runs/small/*")
    np.testing.assert_allclose(history(small), history(big), rtol=1e-5, atol=1e-6)
    assert history(big)[-1, 0] < history(big)[0, 0]


def test_a_resume_carries_the_gradients_of_an_unfinished_window(tmp_path: Path):
    """20 batches an epoch in windows of 3: each epoch ends with gradients still pending."""
    config = accumulating_config(tmp_path, "whole", 25, 3)
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    config = accumulating_config(tmp_path, "parts", 25, 3)
    assert nntrain("fit", str(config), "--epochs", "1", "-q", cwd=tmp_path).exit_code == 0
    parts, = tmp_path.glob("runs/parts/*")
    resumed = nntrain("fit", "--resume", str(parts), "--epochs", "3", "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    whole, = tmp_path.glob("runs/whole/*")
    np.testing.assert_allclose(history(parts), history(whole), rtol=1e-6)
