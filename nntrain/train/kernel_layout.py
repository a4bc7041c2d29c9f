"""Dense kernels held transposed while a training chunk runs on the CPU.

XLA's CPU matrix multiply repacks a weight operand that changed since the last call, and a
Dense kernel changes every step. Held as (units, inputs), each row one unit's weights, the
same product `x @ kernel` (now contracting the last axes of both) and its weight gradient
take less time per step at small batches than with Keras's (inputs, units) layout: on a
2-core Intel Xeon, Fashion-MNIST's 784-300-100-10 MLP ran 15-25% faster at batch 32 and
5-15% at batches 64 and 128, but 10-20% slower at batch 256, where the product's own
arithmetic outweighs the repacking. So only batches of under 256 rows a device. A chunk
swaps the kernels, and the optimizer's copies of them (momentum, moments, accumulated
gradients), into that layout as it starts and back as it ends, so checkpoints, callbacks and
evaluation see Keras's kernels. XLA folds the transposes inside a step into the products'
dimension numbers.

Every optimizer nntrain builds acts element by element, or on a whole weight's norm, which a
transpose keeps: the steps compute the same numbers, only summed in another order.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from nntrain.layers.core import Dense
from nntrain.model import Model

Pytree = Any
LARGE_BATCH = 256  # rows a device from which Keras's layout is the faster one


class KernelLayout:
    """Which weights a training chunk holds transposed, and the swaps in and out of it."""

    def __init__(self, model: Model, optimizer: optax.GradientTransformation,
                 platform: str, rows: int) -> None:
        """`rows`: a step's batch rows on each device."""
        self.optimizer = optimizer
        # layer -> weight name; none off the CPU, where XLA picks the layouts itself
        self.swapped: dict[str, str] = {} if platform != "cpu" or rows >= LARGE_BATCH else {
            name: "kernel" for name, layer in model.layers.items() if type(layer) is Dense}

    def _flags(self, params: Pytree) -> Pytree:
        """`params`' structure with True at the kernels held transposed (a custom layer's
        params may be any pytree: all False)."""
        return {layer: {name: self.swapped[layer] == name and w.ndim == 2
                        for name, w in weights.items()} if layer in self.swapped
                else jax.tree.map(lambda _: False, weights)
                for layer, weights in params.items()}

    def params(self, params: Pytree) -> Pytree:
        """Swap the flagged kernels of `params` (into the layout or out of it: a transpose
        is its own inverse)."""
        if not self.swapped:
            return params
        return jax.tree.map(_swap, params, self._flags(params))

    def carry(self, carry: dict[str, Any]) -> dict[str, Any]:
        """Swap the params of a training carry and the optimizer state's copies of them."""
        if not self.swapped:
            return carry
        opt_state = optax.tree_utils.tree_map_params(self.optimizer, _swap, carry["opt_state"],
                                                     self._flags(carry["params"]))
        return {**carry, "params": self.params(carry["params"]), "opt_state": opt_state}


def _swap(leaf: Any, flag: bool) -> Any:
    return leaf.T if flag else leaf
