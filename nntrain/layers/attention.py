"""Keras's attention layers over (steps, features) sequences: MultiHeadAttention (its weight
layouts, query scaling, masks and dropout of the attention weights), and the projection-free
Attention and AdditiveAttention."""

from __future__ import annotations

import math
from typing import Any

from nntrain import initializers
from nntrain.layers.base import Built, Layer, ShapeError, Weight, as_float, register
from nntrain.lazy import jax, jnp


def _as_matrix(initializer: Any, inputs: int):
    """A variance-scaling initializer drawing a kernel as the matrix (its first `inputs` axes,
    the rest): the fans Keras's EinsumDense gives it (a query kernel of (features, heads,
    key_dim) has fan_in features, fan_out heads * key_dim). Others draw as Keras's do."""
    name = initializers.name_of(initializer)
    if name not in initializers.VARIANCE_SCALING and name != "variance_scaling":
        return initializer

    def draw(key, shape, dtype):
        matrix = (math.prod(shape[:inputs]), math.prod(shape[inputs:]))
        return initializers.get(initializer)(key, matrix, dtype).reshape(shape)

    return draw


@register("multi_head_attention")
class MultiHeadAttention(Layer):
    """Inputs `[query]` (self-attention), `[query, value]` or `[query, value, key]`, each
    (steps, features). Weights as Keras names them: `query_kernel` (features, heads,
    key_dim), `key_kernel`, `value_kernel` (features, heads, value_dim),
    `attention_output_kernel` (heads, value_dim, features out), and a bias for each. The
    output has the query's steps and its features (or `output_shape`)."""

    multi_input = True
    # mask_zero's masks: padded keys get no attention; the output keeps the query's mask
    time_mask_mode = "uses"

    def keeps_time_mask(self) -> bool:
        return True

    @property
    def value_dim(self) -> int:
        return self.args.value_dim or self.args.key_dim

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        mask = shapes.pop() if self.args.attention_mask is not None else None
        if not 1 <= len(shapes) <= 3:
            raise ShapeError(f"takes 1 to 3 inputs ([query], [query, value] or [query, value, "
                             f"key]), got {len(shapes)}")
        for role, shape in zip(("query", "value", "key"), shapes, strict=False):
            if len(shape) != 2:
                raise ShapeError(f"the {role} must be a sequence, (steps, features); got "
                                 f"{shape}")
        query, value = shapes[0], shapes[min(1, len(shapes) - 1)]
        key = shapes[2] if len(shapes) == 3 else value
        if key[0] != value[0]:
            raise ShapeError(f"the key has {key[0]} steps, the value {value[0]}: they must "
                             "have the same number")
        if mask is not None and mask != (query[0], key[0]):
            raise ShapeError(f"the attention_mask '{self.args.attention_mask}' must be "
                             f"(query steps, key steps) = {(query[0], key[0])}; got {mask}")
        a, heads = self.args, self.args.num_heads
        out = a.output_shape or query[-1]

        def weights(name: str, kernel: tuple[int, ...], bias: tuple[int, ...],
                    inputs: int) -> dict:
            made = {f"{name}_kernel": Weight(kernel, _as_matrix(a.kernel_initializer, inputs),
                                             regularizer=a.kernel_regularizer,
                                             constraint=a.kernel_constraint)}
            if a.use_bias:
                made[f"{name}_bias"] = Weight(bias, a.bias_initializer,
                                              regularizer=a.bias_regularizer,
                                              constraint=a.bias_constraint)
            return made

        params = {**weights("query", (query[-1], heads, a.key_dim), (heads, a.key_dim), 1),
                  **weights("key", (key[-1], heads, a.key_dim), (heads, a.key_dim), 1),
                  **weights("value", (value[-1], heads, self.value_dim),
                            (heads, self.value_dim), 1),
                  **weights("attention_output", (heads, self.value_dim, out), (out,), 2)}
        return Built(params, {}, (query[0], out))

    def call(self, params, state, x, *, training, rng, time_mask=None, **_):
        x = list(x)
        masks = list(time_mask) if isinstance(time_mask, list | tuple) else [time_mask]
        masks += [None] * (len(x) - len(masks))
        given = None
        if self.args.attention_mask is not None:  # the last input, and its own step mask
            given, masks = x.pop() != 0, masks[:-1]
        x = [as_float(v) for v in x]
        query, value = x[0], x[min(1, len(x) - 1)]
        key = x[2] if len(x) == 3 else value

        def project(name: str, v: jax.Array) -> jax.Array:
            y = jnp.einsum("btf,fnh->btnh", v, params[f"{name}_kernel"])
            return y + params[f"{name}_bias"] if f"{name}_bias" in params else y

        q = project("query", query) * (1.0 / math.sqrt(self.args.key_dim))
        k, v = project("key", key), project("value", value)
        scores = jnp.einsum("bsnh,btnh->bnts", k, q)  # (batch, heads, query step, key step)
        allowed = self._allowed(query.shape[1], key.shape[1], masks, len(x))
        if given is not None:
            allowed = given if allowed is None else allowed & given
        if allowed is None:
            weights = jax.nn.softmax(scores, axis=-1)
        else:
            # Keras's masked softmax: masked scores pushed far down (never -inf, whose
            # gradient is NaN) then zeroed, so a query step that may see no key attends to
            # nothing
            allowed = allowed[:, None]
            weights = jax.nn.softmax(
                jnp.where(allowed, scores, jnp.finfo(scores.dtype).min / 2), axis=-1)
            weights = jnp.where(allowed, weights, 0.0)
        rate = self.args.dropout
        if training and rate > 0.0 and rng is not None:
            keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
            weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
        attended = jnp.einsum("bnts,bsnh->btnh", weights, v)
        y = jnp.einsum("btnh,nho->bto", attended, params["attention_output_kernel"])
        if "attention_output_bias" in params:
            y = y + params["attention_output_bias"]
        return y, state

    def _allowed(self, steps: int, key_steps: int, masks: list, count: int):
        """Which key steps each query step may attend to, (batch or 1, steps, key steps):
        Keras's AND of the query's, value's and key's masks, the causal mask and the
        sliding window; None when nothing is masked."""
        query_mask, value_mask = masks[0], masks[1] if count > 1 else masks[0]
        key_mask = masks[2] if count == 3 else None
        parts = []
        if query_mask is not None:
            parts.append(query_mask[:, :, None])
        parts += [m[:, None, :] for m in (value_mask, key_mask) if m is not None]
        rows, cols = jnp.arange(steps)[:, None], jnp.arange(key_steps)[None, :]
        if self.args.use_causal_mask:
            parts.append((rows >= cols)[None])
        if self.args.sliding_window is not None:
            parts.append((jnp.abs(rows - cols) < self.args.sliding_window)[None])
        if not parts:
            return None
        allowed = parts[0]
        for part in parts[1:]:
            allowed = allowed & part
        return allowed


@register("attention")
class Attention(Layer):
    """Keras's Attention: inputs `[query, value]` or `[query, value, key]` (the key is the
    value when not given), each (steps, features); no projections. Scores (query steps, key
    steps) are dot products (`score_mode: dot`, scaled by the learned scalar `scale` when
    `use_scale`) or `concat_score_weight * sum(tanh(scale * (query + key)))`; their softmax
    weighs the value's steps. The output has the query's steps and the value's features."""

    multi_input = True
    # Keras's masks: the value's mask hides padded keys, the query's zeroes its padded steps'
    # outputs and stays on them
    time_mask_mode = "uses"

    def keeps_time_mask(self) -> bool:
        return True

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if isinstance(input_shape, list) else []
        if not 2 <= len(shapes) <= 3:
            raise ShapeError(f"takes 2 or 3 inputs ([query, value] or [query, value, key]), "
                             f"got {len(shapes) or 1}; for self-attention give one node "
                             "twice: inputs: [x, x]")
        for role, shape in zip(("query", "value", "key"), shapes, strict=False):
            if len(shape) != 2:
                raise ShapeError(f"the {role} must be a sequence, (steps, features); got "
                                 f"{shape}")
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) == 3 else value
        if key[0] != value[0]:
            raise ShapeError(f"the key has {key[0]} steps, the value {value[0]}: they must "
                             "have the same number")
        if key[1] != query[1]:
            named = "key" if len(shapes) == 3 else "value (the key when no key is given)"
            raise ShapeError(f"the query has {query[1]} features, the {named} {key[1]}: "
                             "scores compare them feature by feature, so they must match")
        return Built(self.weights(query[1]), {}, (query[0], value[1]))

    def weights(self, features: int) -> dict[str, Weight]:
        made = {"scale": Weight((), "ones")} if self.args.use_scale else {}
        if self.args.score_mode == "concat":
            made["concat_score_weight"] = Weight((), "ones")
        return made

    def scores(self, params, query: jax.Array, key: jax.Array) -> jax.Array:
        """(batch, query steps, key steps)."""
        if self.args.score_mode == "dot":
            scores = jnp.einsum("bqf,bkf->bqk", query, key)
            return scores * params["scale"] if "scale" in params else scores
        summed = query[:, :, None] + key[:, None]
        if "scale" in params:
            summed = params["scale"] * summed
        return params["concat_score_weight"] * jnp.tanh(summed).sum(-1)

    def call(self, params, state, x, *, training, rng, time_mask=None, **_):
        x = [as_float(v) for v in x]
        query, value = x[0], x[1]
        key = x[2] if len(x) == 3 else value
        masks = list(time_mask) if isinstance(time_mask, list | tuple) else [None] * len(x)
        query_mask, value_mask = masks[0], masks[1]
        scores = self.scores(params, query, key)
        allowed = None if value_mask is None else value_mask[:, None, :]
        if self.args.use_causal_mask:
            steps = jnp.arange(scores.shape[-2])[:, None] >= jnp.arange(scores.shape[-1])
            allowed = steps[None] if allowed is None else allowed & steps
        if allowed is not None:  # Keras's bias: masked keys' scores lowered by 1e9
            scores = jnp.where(allowed, scores, scores - 1e9)
        weights = jax.nn.softmax(scores, axis=-1)
        rate = self.args.dropout
        if training and rate > 0.0 and rng is not None:
            keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
            weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
        y = jnp.einsum("bqk,bkf->bqf", weights, value)
        if query_mask is not None:
            y = jnp.where(query_mask[:, :, None], y, 0.0)
        return y, state


@register("additive_attention")
class AdditiveAttention(Attention):
    """Keras's AdditiveAttention: scores `sum(scale * tanh(query + key))` over the features,
    `scale` a learned vector of the query's features (glorot_uniform) when `use_scale`."""

    def weights(self, features: int) -> dict[str, Weight]:
        return {"scale": Weight((features,), "glorot_uniform")} if self.args.use_scale else {}

    def scores(self, params, query: jax.Array, key: jax.Array) -> jax.Array:
        summed = jnp.tanh(query[:, :, None] + key[:, None])
        return (params["scale"] * summed if "scale" in params else summed).sum(-1)
