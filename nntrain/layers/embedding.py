"""Embedding: integer ids (word or category indices) looked up as rows of a trained table."""

from __future__ import annotations

import jax.numpy as jnp

from nntrain import initializers
from nntrain.layers.base import Layer, register


@register("embedding")
class Embedding(Layer):
    """`embeddings[ids]`: (..., ) ids give (..., output_dim) vectors. Ids are cast to int32,
    so float inputs holding whole numbers work too."""

    def init(self, rng, input_shape):
        name = self.args.embeddings_initializer
        init = initializers.get("random_uniform" if name == "uniform" else name)
        table = init(rng, (self.args.input_dim, self.args.output_dim), jnp.float32)
        return {"embeddings": table}, {}, (*input_shape, self.args.output_dim)

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.take(params["embeddings"], x.astype(jnp.int32), axis=0), state
