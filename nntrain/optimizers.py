"""Keras's optimizers by name, as optax transformations, and learning-rate schedules.

The learning rate lives in the optimizer state (`optax.inject_hyperparams`), so a callback can
change it between steps without recompiling. With a schedule, `inject_hyperparams` evaluates
it at every update and keeps the value it used in the same place: after `n` updates the state
holds `schedule(n - 1)`, the rate of the last step taken, which is what the logs report.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from nntrain.config.compile import OPTIMIZERS, OptimizerArgs, schedule_of
from nntrain.lazy import jax, jnp, optax


def _clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
    """Keras's `clipnorm`: each weight's gradient is clipped to this norm on its own."""

    def clip(updates, params=None):
        def one(g):
            norm = jnp.sqrt(jnp.sum(jnp.square(g)))
            return g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))

        return jax.tree.map(one, updates)

    return optax.stateless(clip)


def _keras_moments(updates: Any, mu: Any, nu: Any, b1: float, b2: float) -> tuple[Any, Any]:
    """The first and second moments, updated in Keras's arithmetic (`m + (g - m) * (1 - b1)`),
    so the steps match Keras's to the last bit."""
    return (jax.tree.map(lambda g, m: m + (g - m) * (1 - b1), updates, mu),
            jax.tree.map(lambda g, v: v + (g * g - v) * (1 - b2), updates, nu))


class KerasAdamState(NamedTuple):
    count: Any  # steps taken
    mu: Any
    nu: Any
    nu_max: Any  # amsgrad's running maximum of nu (None without amsgrad)


def scale_by_keras_adam(b1: float, b2: float, eps: float,
                        amsgrad: bool = False) -> optax.GradientTransformation:
    """Keras's Adam step, `sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`: epsilon is
    added before the bias correction (optax.adam adds it after, which differs for gradients
    near epsilon in the first steps). Scale by the learning rate after this."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros([], jnp.int32), zeros, zeros,
                              zeros if amsgrad else None)

    def update(updates, state, params=None):
        t = (state.count + 1).astype(jnp.float32)
        mu, nu = _keras_moments(updates, state.mu, state.nu, b1, b2)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        scale = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        step = jax.tree.map(lambda m, v: scale * m / (jnp.sqrt(v) + eps), mu,
                            nu_max if amsgrad else nu)
        return step, KerasAdamState(optax.safe_increment(state.count), mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


class KerasNadamState(NamedTuple):
    count: Any  # steps taken
    u_product: Any  # the product of the momentum schedule's values so far
    mu: Any
    nu: Any


def scale_by_keras_nadam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Keras's Nadam (Dozat 2016): Nesterov momentum under the schedule
    `u_t = b1 * (1 - 0.5 * 0.96**t)`. optax.nadam has no schedule, so its first steps are
    up to ~40% larger than Keras's. Scale by the learning rate after this."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasNadamState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32), zeros, zeros)

    def update(updates, state, params=None):
        t = (state.count + 1).astype(jnp.float32)
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_next = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product = state.u_product * u_t
        u_product_next = u_product * u_next
        mu, nu = _keras_moments(updates, state.mu, state.nu, b1, b2)

        def step(g, m, v):
            m_hat = u_next * m / (1 - u_product_next) + (1 - u_t) * g / (1 - u_product)
            return m_hat / (jnp.sqrt(v / (1 - b2 ** t)) + eps)

        return (jax.tree.map(step, updates, mu, nu),
                KerasNadamState(optax.safe_increment(state.count), u_product, mu, nu))

    return optax.GradientTransformation(init, update)


def build_schedule(entry: Any) -> optax.Schedule:
    """An optax schedule for a validated schedule entry (`{exponential_decay: {...}}`), with
    Keras's semantics where Keras has the schedule."""
    found = schedule_of(entry)
    if found is None:
        raise ValueError(f"not a schedule: {entry!r}")
    name, a = found
    if name == "constant":
        return optax.constant_schedule(a.value)
    if name == "exponential_decay":
        return optax.exponential_decay(a.initial_learning_rate, a.decay_steps, a.decay_rate,
                                       staircase=a.staircase)
    if name == "piecewise_constant":
        # Keras switches to values[i + 1] after boundaries[i] (step > boundary), optax's
        # boundaries at step >= boundary: hence the + 1
        return optax.join_schedules([optax.constant_schedule(v) for v in a.values],
                                    [b + 1 for b in a.boundaries])
    if name == "cosine_decay":
        if a.warmup_target is None:
            return optax.cosine_decay_schedule(a.initial_learning_rate, a.decay_steps, a.alpha)
        decay = optax.cosine_decay_schedule(a.warmup_target, a.decay_steps, a.alpha)
        if not a.warmup_steps:
            return decay
        warmup = optax.linear_schedule(a.initial_learning_rate, a.warmup_target, a.warmup_steps)
        return optax.join_schedules([warmup, decay], [a.warmup_steps])
    if name == "warmup_cosine_decay":
        return optax.warmup_cosine_decay_schedule(a.init_value, a.peak_value, a.warmup_steps,
                                                  a.decay_steps, a.end_value, a.exponent)
    if name == "one_cycle":
        return optax.cosine_onecycle_schedule(a.transition_steps, a.peak_value, a.pct_start,
                                              a.div_factor, a.final_div_factor)
    raise ValueError(f"unknown schedule {name}")


def _learning_rate(value: Any) -> float | optax.Schedule:
    """A number stays a number (callbacks may change it); a schedule becomes optax's."""
    found = schedule_of(value)
    if found is None:
        return value
    if found[0] == "constant":
        return found[1].value
    return build_schedule(value)


def _decay_weights(rate: float, learning_rate: Any) -> optax.GradientTransformation:
    """Keras 3's `weight_decay` on any optimizer: every weight also moves by
    `-learning_rate * rate * weight`, apart from the gradient's step (decoupled, as in
    AdamW), so momentum and adaptive scaling never see it."""

    def decay(updates, params=None):
        return jax.tree.map(lambda u, p: u - learning_rate * rate * p, updates, params)

    return optax.stateless(decay)


def build_optimizer(name: str, args: OptimizerArgs) -> optax.GradientTransformation:
    name = OPTIMIZERS.canonical(name)
    a = args

    def make(learning_rate):
        step = direction(learning_rate)
        if a.weight_decay and name != "adamw":  # adamw decays inside its own chain
            return optax.chain(step, _decay_weights(a.weight_decay, learning_rate))
        return step

    def direction(learning_rate):
        if name == "sgd":
            # Keras accumulates the velocity of lr-scaled gradients, so a new learning rate
            # does not rescale what was already built up (optax.sgd scales after the trace)
            if not a.momentum:
                return optax.scale_by_learning_rate(learning_rate)
            return optax.chain(optax.scale_by_learning_rate(learning_rate),
                               optax.trace(decay=a.momentum, nesterov=a.nesterov))
        if name in ("adam", "adamw"):  # adamw: Keras decays each weight by lr * weight_decay
            decay = [optax.add_decayed_weights(a.weight_decay)] if name == "adamw" and \
                a.weight_decay else []
            return optax.chain(
                scale_by_keras_adam(a.beta_1, a.beta_2, a.epsilon, getattr(a, "amsgrad", False)),
                *decay, optax.scale_by_learning_rate(learning_rate))
        if name == "nadam":
            return optax.chain(scale_by_keras_nadam(a.beta_1, a.beta_2, a.epsilon),
                               optax.scale_by_learning_rate(learning_rate))
        if name == "rmsprop":  # Keras 3: lr * g / sqrt(v + epsilon), epsilon inside
            return optax.rmsprop(learning_rate, decay=a.rho, eps=a.epsilon, centered=a.centered,
                                 momentum=a.momentum or None, eps_in_sqrt=True)
        if name == "adagrad":
            return optax.adagrad(learning_rate, eps=a.epsilon,
                                 initial_accumulator_value=a.initial_accumulator_value)
        raise ValueError(f"unknown optimizer {name}")

    clipping = []
    if a.clipvalue is not None:
        clipping.append(optax.clip(a.clipvalue))
    if a.clipnorm is not None:
        clipping.append(_clip_each_by_norm(a.clipnorm))
    if a.global_clipnorm is not None:
        clipping.append(optax.clip_by_global_norm(a.global_clipnorm))
    learning_rate = _learning_rate(a.learning_rate)
    every = a.gradient_accumulation_steps
    if every and callable(learning_rate):
        # Keras evaluates a schedule at its count of batches, not of updates: the k-th update
        # (from 0) comes after batch k * every + every - 1
        learning_rate = _at_batches(learning_rate, every)
    optimizer = optax.inject_hyperparams(make)(learning_rate=learning_rate)
    optimizer = optax.chain(*clipping, optimizer) if clipping else optimizer
    if every:
        # Keras's accumulation: every `every` batches, one update with the mean of their
        # gradients, clipped and decayed then; in between the weights stay as they are
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=every).gradient_transformation()
    if a.use_ema:  # outermost: Keras averages after every batch, accumulating or not
        optimizer = keras_ema(optimizer, a.ema_momentum, a.ema_overwrite_frequency, every or 1)
    return optimizer


class KerasEmaState(NamedTuple):
    inner: Any  # the optimizer's own state
    count: Any  # batches taken
    average: Any  # the moving average of the weights, shaped as they are


def keras_ema(inner: optax.GradientTransformation, momentum: float,
              overwrite_every: int | None = None,
              accumulating: int = 1) -> optax.GradientTransformation:
    """Keras's `use_ema`: after each batch, `average = momentum * average + (1 - momentum) *
    weights`, and with `overwrite_every` the weights move onto the average. Both follow
    Keras's `iterations`, which counts updates (with `accumulating` batches to an update,
    batches // accumulating): the average copies the weights until the first update, and
    the overwrite happens on every batch of each `overwrite_every`-th update.
    `finalize_weights` is Keras's `finalize_variable_values`, at the end of training."""

    def init(params):
        return KerasEmaState(inner.init(params), jnp.zeros([], jnp.int32),
                             jax.tree.map(jnp.array, params))

    def update(updates, state, params=None):
        step, inner_state = inner.update(updates, state.inner, params)
        weights = optax.apply_updates(params, step)
        iterations = state.count // accumulating
        kept = jnp.where(iterations == 0, jnp.float32(0), jnp.float32(momentum))
        average = jax.tree.map(lambda a, w: (kept * a + (1 - kept) * w).astype(w.dtype),
                               state.average, weights)
        if overwrite_every:
            now = (iterations + 1) % overwrite_every == 0
            step = jax.tree.map(lambda s, a, p: jnp.where(now, a - p, s), step, average, params)
        return step, KerasEmaState(inner_state, optax.safe_increment(state.count), average)

    return optax.GradientTransformation(init, update)


def uses_ema(opt_state: Any) -> bool:
    return isinstance(opt_state, KerasEmaState)


def moving_average(opt_state: Any) -> Any:
    """The weights' moving average an optimizer with `use_ema` keeps."""
    return opt_state.average


def finalize_weights(params: Any, opt_state: Any) -> Any:
    """The weights training leaves: with `use_ema`, their moving average (as Keras's `fit`
    ends), else the weights themselves."""
    return moving_average(opt_state) if uses_ema(opt_state) else params


def _at_batches(schedule: optax.Schedule, every: int) -> optax.Schedule:
    return lambda update: schedule(update * every + every - 1)


def _hyperparams_state(opt_state: Any) -> optax.InjectHyperparamsState:
    """The state holding the learning rate, wherever a chain or MultiSteps put it."""
    if hasattr(opt_state, "hyperparams"):
        return opt_state
    if isinstance(opt_state, tuple):
        for part in opt_state:
            try:
                return _hyperparams_state(part)
            except ValueError:
                pass
    raise ValueError("optimizer state has no injected hyperparameters")


def get_learning_rate(opt_state: Any) -> float:
    """The learning rate: the one set, or with a schedule the one the last step used."""
    return float(_hyperparams_state(opt_state).hyperparams["learning_rate"])


def has_schedule(opt_state: Any) -> bool:
    """Whether the learning rate follows a schedule (and so cannot be set)."""
    return "learning_rate" in getattr(_hyperparams_state(opt_state), "hyperparams_states", {})


class ScheduledLearningRate(ValueError):
    """Setting a learning rate that a schedule recomputes at every step."""


def set_learning_rate(opt_state: Any, value: float) -> Any:
    """A new optimizer state with the learning rate replaced (same structure and dtype: no
    recompile). The given state is left as it was. Refused when the rate
    follows a schedule: the next step would overwrite it."""
    if has_schedule(opt_state):
        raise ScheduledLearningRate(
            "the learning rate follows a schedule, which sets it at every step")

    def swap(state):
        old = state.hyperparams["learning_rate"]
        rate = jnp.asarray(value, dtype=jnp.asarray(old).dtype)
        return state._replace(hyperparams={**state.hyperparams, "learning_rate": rate})

    def walk(state):
        if hasattr(state, "hyperparams"):
            return swap(state)
        if isinstance(state, tuple):
            parts = [walk(part) for part in state]
            return state._make(parts) if hasattr(state, "_make") else type(state)(parts)
        return state

    return walk(opt_state)
