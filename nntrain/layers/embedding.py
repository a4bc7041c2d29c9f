"""Embedding: integer ids (word or category indices) looked up as rows of a trained table."""

from __future__ import annotations

from nntrain.layers.base import Built, Layer, Weight, register
from nntrain.lazy import jnp


@register("embedding")
class Embedding(Layer):
    """`embeddings[ids]`: (..., ) ids give (..., output_dim) vectors. Ids are cast to int32,
    so float inputs holding whole numbers work too."""

    def build(self, input_shape):
        a = self.args
        name = "random_uniform" if a.embeddings_initializer == "uniform" else \
            a.embeddings_initializer
        table = Weight((a.input_dim, a.output_dim), name, regularizer=a.embeddings_regularizer,
                       constraint=a.embeddings_constraint)
        return Built({"embeddings": table}, {}, (*input_shape, a.output_dim))

    def makes_time_mask(self) -> bool:
        return self.args.mask_zero

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.take(params["embeddings"], x.astype(jnp.int32), axis=0), state
