"""JAX and optax, imported on first use.

Importing JAX takes about half a second, longer than reading and checking a config. Modules
that `nntrain validate` and `nntrain summary` load (layers, losses, metrics, optimizers, the
model) name these stand-ins instead, so those commands never import JAX; anything that
computes imports it the moment it touches an attribute.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for module `name` and imports it on the first attribute looked up."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
lax = LazyModule("jax.lax")
optax = LazyModule("optax")
