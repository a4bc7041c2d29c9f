"""Data bigger than the device's memory budget (`data.device_memory`): the rows of each chunk
of steps are gathered on the host, from memory-mapped `.npy` files, in the order the
in-memory path would use, and copied to the device one chunk ahead by a background thread.

A chunk is `{"x", "y", "w"?, "base"}` with `steps x batch_size` rows in the order they are
used; `base` is the epoch position of its first row, so the compiled step reads row
`position - base` of the chunk where the in-memory path reads `order[position]` of the whole
set. Same rows, same arithmetic: the same results as the in-memory path for the same seed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nntrain.data.arrays import ArraySet

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from `1_000_000`, `"512MB"`, `"2GiB"`, `"1.5 GB"` (the config schema has
    checked the form)."""
    if isinstance(text, int):
        return text
    match = re.match(r"^\s*([\d.]+)\s*([a-zA-Z]*)\s*$", text)
    assert match is not None, text
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def memory_budget(setting: str | int, device: Any) -> int:
    """`auto`: half the device's memory where it reports it (GPU, TPU), else half the
    machine's RAM (the CPU backend's "device" memory)."""
    if setting != "auto":
        return parse_size(setting)
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # backends without memory_stats
        limit = None
    if not limit:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(limit) // 2


def nbytes(data: ArraySet | None) -> int:
    if data is None or not isinstance(data, ArraySet):  # generated batches: not held
        return 0
    arrays = [*data.x.values(), *data.y.values(), *data.weights().values()]
    return sum(a.nbytes for a in arrays)


def row_bytes(data: ArraySet) -> int:
    return max(1, nbytes(data) // max(1, len(data)))


def examples(data) -> int:
    """Real examples in a split (generated splits pad their last batch)."""
    return getattr(data, "examples", len(data))


class Stream:
    """One split, fed to the device chunk by chunk. `put` moves a tree of host arrays to the
    device(s)."""

    def __init__(self, data: ArraySet, put: Callable[[Any], Any]) -> None:
        self.data = data
        self.put = put
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nntrain-prefetch")
        self._orders: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)

    def local_order(self, rows: int) -> Any:
        """The order array a chunk program reads: chunk rows are already in order."""
        if rows not in self._orders:
            self._orders[rows] = self.put(np.arange(rows, dtype=np.int32))
        return self._orders[rows]

    def chunks(self, order: np.ndarray | None, batch_size: int, start_step: int, n_steps: int,
               per_call: int, epoch: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(first step, steps, device chunk) from `start_step` on, the next chunk being
        prepared while the caller runs this one. `order=None`: the rows as they are
        (evaluation)."""
        plan = [(s, min(per_call, n_steps - s)) for s in range(start_step, n_steps, per_call)]
        rows = per_call * batch_size
        ahead = None
        for i, (first, k) in enumerate(plan):
            job = ahead or self._pool.submit(self._chunk, order, first * batch_size, rows)
            ahead = None
            if i + 1 < len(plan):
                ahead = self._pool.submit(self._chunk, order, plan[i + 1][0] * batch_size,
                                          rows)
            yield first, k, job.result()

    def _chunk(self, order: np.ndarray | None, start: int, rows: int) -> dict[str, Any]:
        n = len(self.data)
        if order is None:
            positions = np.minimum(np.arange(start, start + rows), n - 1)
        else:
            positions = order[np.minimum(np.arange(start, start + rows), len(order) - 1)]
        # read the memory-mapped files front to back, then put the rows in epoch order
        by_file = np.argsort(positions, kind="stable")
        picked = self.data.take(positions[by_file])
        inverse = np.empty_like(by_file)
        inverse[by_file] = np.arange(len(by_file))
        chunk: dict[str, Any] = {"x": {k: v[inverse] for k, v in picked.x.items()},
                                 "y": {k: v[inverse] for k, v in picked.y.items()}}
        if picked.sample_weight is not None:
            chunk["w"] = picked.sample_weight[inverse].astype(np.float32)
        if picked.output_weights:
            chunk["wo"] = {k: v[inverse].astype(np.float32)
                           for k, v in picked.output_weights.items()}
        chunk["base"] = np.int32(start)
        return self.put(chunk)
