"""Layer implementations, registered by the names configs use."""

from nntrain.layers import (  # noqa: F401  (registers the layers)
    activation,
    attention,
    conv,
    core,
    embedding,
    merge,
    noise,
    normalization,
    pooling,
    recurrent,
    reshaping,
    wrappers,
)
from nntrain.layers.base import LAYER_TYPES, Layer, ShapeError

__all__ = ["LAYER_TYPES", "Layer", "ShapeError"]
