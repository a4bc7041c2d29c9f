"""Embedding: integer ids (word or category indices) looked up as rows of a trained table."""

from __future__ import annotations

from nntrain.layers.base import Built, Layer, ShapeError, Weight, register
from nntrain.lazy import jnp


@register("embedding")
class Embedding(Layer):
    """`embeddings[ids]`: (..., ) ids give (..., output_dim) vectors. Ids are cast to int32,
    so float inputs holding whole numbers work too."""

    def build(self, input_shape):
        a = self.args
        table = Weight((a.input_dim, a.output_dim), a.embeddings_initializer,
                       regularizer=a.embeddings_regularizer,
                       constraint=a.embeddings_constraint)
        return Built({"embeddings": table}, {}, (*input_shape, a.output_dim))

    def makes_time_mask(self) -> bool:
        return self.args.mask_zero

    def time_mask(self, x):
        return x.astype(jnp.int32) != 0  # id 0 is padding

    def call(self, params, state, x, *, training, rng, **_):
        return jnp.take(params["embeddings"], x.astype(jnp.int32), axis=0), state


@register("position_embedding")
class PositionEmbedding(Layer):
    """KerasHub's PositionEmbedding: a trained vector per position, `embeddings[:steps]`
    broadcast over the batch, of the input's shape (steps, features). Add it to the input
    (`add: {inputs: [tokens, positions]}`) to tell attention where each step is."""

    # it passes its input's mask on (KerasHub's PositionEmbedding drops it), so that `add:
    # [tokens, positions]` keeps the tokens' mask, as KerasHub's TokenAndPositionEmbedding
    # does: under Keras's rules a merge of masked and unmasked inputs has no mask
    time_mask_mode = "keeps"

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ShapeError(f"it takes sequences, (steps, features); got {tuple(input_shape)}")
        steps, features = input_shape
        if steps > self.args.sequence_length:
            raise ShapeError(f"the input has {steps} steps, more than sequence_length "
                             f"{self.args.sequence_length}: raise sequence_length to {steps}")
        table = Weight((self.args.sequence_length, features), self.args.initializer)
        return Built({"embeddings": table}, {}, tuple(input_shape))

    def call(self, params, state, x, *, training, rng, **_):
        table = params["embeddings"][: x.shape[1]]
        return jnp.broadcast_to(table, (x.shape[0], *table.shape)), state
