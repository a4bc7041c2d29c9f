"""Keras's optimizers by name, as optax transformations.

The learning rate lives in the optimizer state (`optax.inject_hyperparams`), so a callback can
change it between steps without recompiling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from nntrain.config.compile import OPTIMIZERS, OptimizerArgs


def _clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
    """Keras's `clipnorm`: each weight's gradient is clipped to this norm on its own."""

    def clip(updates, params=None):
        def one(g):
            norm = jnp.sqrt(jnp.sum(jnp.square(g)))
            return g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))

        return jax.tree.map(one, updates)

    return optax.stateless(clip)


def build_optimizer(name: str, args: OptimizerArgs) -> optax.GradientTransformation:
    name = OPTIMIZERS.canonical(name)
    a = args

    def make(learning_rate):
        if name == "sgd":
            # Keras accumulates the velocity of lr-scaled gradients, so a new learning rate
            # does not rescale what was already built up (optax.sgd scales after the trace)
            if not a.momentum:
                return optax.scale_by_learning_rate(learning_rate)
            return optax.chain(optax.scale_by_learning_rate(learning_rate),
                               optax.trace(decay=a.momentum, nesterov=a.nesterov))
        if name == "adam":
            maker = optax.amsgrad if a.amsgrad else optax.adam
            return maker(learning_rate, b1=a.beta_1, b2=a.beta_2, eps=a.epsilon)
        if name == "adamw":
            return optax.adamw(learning_rate, b1=a.beta_1, b2=a.beta_2, eps=a.epsilon,
                               weight_decay=a.weight_decay)
        if name == "nadam":
            return optax.nadam(learning_rate, b1=a.beta_1, b2=a.beta_2, eps=a.epsilon)
        if name == "rmsprop":
            return optax.rmsprop(learning_rate, decay=a.rho, eps=a.epsilon, centered=a.centered,
                                 momentum=a.momentum or None, eps_in_sqrt=False)
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
    optimizer = optax.inject_hyperparams(make)(learning_rate=a.learning_rate)
    return optax.chain(*clipping, optimizer) if clipping else optimizer


def _hyperparams_state(opt_state) -> optax.InjectHyperparamsState:
    states = opt_state if isinstance(opt_state, tuple) and not hasattr(opt_state, "hyperparams") \
        else (opt_state,)
    for s in states:
        if hasattr(s, "hyperparams"):
            return s
    raise ValueError("optimizer state has no injected hyperparameters")


def get_learning_rate(opt_state) -> float:
    return float(_hyperparams_state(opt_state).hyperparams["learning_rate"])


def set_learning_rate(opt_state, value: float):
    """A new optimizer state with the learning rate replaced (same structure and dtype: no
    recompile). The given state is left as it was."""

    def swap(state):
        if not hasattr(state, "hyperparams"):
            return state
        old = state.hyperparams["learning_rate"]
        rate = jnp.asarray(value, dtype=jnp.asarray(old).dtype)
        return state._replace(hyperparams={**state.hyperparams, "learning_rate": rate})

    if hasattr(opt_state, "hyperparams"):
        return swap(opt_state)
    return type(opt_state)(swap(s) for s in opt_state)
