"""nntrain: train neural networks from a YAML config, with Keras semantics on JAX."""

__version__ = "0.1.0"
