"""Where the arrays live: the default device, or a data-parallel mesh over several devices
(and several processes, joined through `jax.distributed`).

On a mesh the training data, parameters and optimizer state are replicated, and each batch is
split along the mesh's `data` axis inside the compiled program; XLA inserts the gradient
all-reduce. Every process runs the same program on the same (replicated) values, so the loop
in `fit.py` does not change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from nntrain.config.loader import ConfigError, LoadedConfig
from nntrain.errors import UserError


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run before JAX touches a device. With no arguments JAX finds the
    cluster itself (SLURM, Open MPI, Cloud TPU pods, Kubernetes)."""
    if jax.config.jax_platforms in (None, "", "cpu") and os.environ.get(
            "JAX_PLATFORMS", "cpu") == "cpu":
        # processes on CPUs talk through gloo; other backends bring their own collectives
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
    except (ValueError, RuntimeError) as e:  # JAX's own errors: no cluster, unreachable, ...
        raise UserError(f"cannot join the multi-process run: {e}",
                        "inside a cluster (SLURM, Open MPI, TPU pods) --distributed finds the "
                        "others; elsewhere give --coordinator HOST:PORT --num-processes N "
                        "--process-id I") from None


@dataclass(frozen=True)
class Placement:
    """One device (mesh None), or a 1-D mesh with a `data` axis over several."""

    devices: tuple[Any, ...]
    mesh: Any = None

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> Placement:
        """`fit.devices`: a count, or "all" (every device of every process); the batch sizes
        must split evenly over them."""
        fit = loaded.config.fit
        available = jax.devices()

        def refuse(key: str, message: str):
            return ConfigError([loaded.issue(("fit", key), message)])

        requested = fit.devices
        if jax.process_count() > 1:  # every process must take part in every program
            if requested not in (None, "all", len(available)):
                raise refuse("devices", f"a run over {jax.process_count()} processes uses "
                             f"all {len(available)} devices, not {requested}: set 'all'")
            requested = "all"
        count = len(available) if requested == "all" else int(requested or 1)
        if count > len(available):
            raise refuse("devices", f"{count} devices asked for, but only {len(available)} "
                         f"{available[0].platform} device(s) are visible: ask for fewer, or on "
                         f"a CPU simulate {count} with XLA_FLAGS="
                         f"--xla_force_host_platform_device_count={count}")
        for key in ("batch_size", "validation_batch_size"):
            size = getattr(fit, key)
            if size is not None and size % count and loaded.saved:  # a run's: its batch stays
                raise refuse("devices", f"the run's {key} of {size} cannot be split evenly "
                             f"over {count} devices: give a device count that divides {size}")
            if size is not None and size % count:
                raise refuse(key, f"a batch of {size} cannot be split evenly over {count} "
                             f"devices: use a multiple of {count}")
        devices = tuple(available[:count])
        if count == 1 and jax.process_count() == 1:
            return cls(devices)
        # Auto axes: XLA propagates the batch split from one constraint per step
        return cls(devices, jax.make_mesh((count,), ("data",), devices=devices,
                                          axis_types=(jax.sharding.AxisType.Auto,)))

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def is_primary(self) -> bool:
        """The process that writes files and prints."""
        return jax.process_index() == 0

    def largest(self, value: int) -> int:
        """The largest of every process's `value`; each process gets the same answer (and
        must ask as often as the others)."""
        if jax.process_count() == 1:
            return value
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.array(value, np.int32))))

    def replicate(self, tree: Any) -> Any:
        """Every leaf on every device of the mesh (or on the default device)."""
        if self.mesh is None:
            return jax.device_put(tree)
        sharding = jax.NamedSharding(self.mesh, jax.P())
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        # each process holds the whole value; together they form one global array
        def one(x):
            if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
                return x
            if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                data = one(jax.random.key_data(x))
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
            return jax.make_array_from_process_local_data(sharding, np.asarray(fetch(x)))

        return jax.tree.map(one, tree)

    def as_replicated(self, shapes: Any) -> Any:
        """What jit will see of arrays of these shapes once `replicate` has placed them:
        for compiling ahead the programs they will be passed to, before they exist."""
        sharding = None if self.mesh is None else jax.NamedSharding(self.mesh, jax.P())
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=sharding, weak_type=getattr(a, "weak_type", False)),
            shapes)

    def shard_batch(self, tree: Any) -> Any:
        """Inside a compiled program: split the batch dimension over the `data` axis."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, jax.NamedSharding(self.mesh,
                                                                        jax.P("data")))

    def describe(self) -> dict[str, Any]:
        """What run.json records."""
        first = self.devices[0]
        return {"platform": first.platform, "kind": first.device_kind, "count": self.count,
                "processes": jax.process_count(), "ids": [d.id for d in self.devices]}


def shapes_as_passed(tree: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s arrays as jit sees them when they are passed (an
    uncommitted array leaves its placement to jit): lowered with these, a program is the
    one a later call with the arrays finds compiled, even once the arrays are donated."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=a.sharding if a.committed else None,
        weak_type=getattr(a, "weak_type", False)), tree)  # (a key array has none)


def fetch(tree: Any) -> Any:
    """Host copies of (replicated) device arrays: in a multi-process run a global array is
    not wholly addressable from one process, but every process holds a full replica."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)
