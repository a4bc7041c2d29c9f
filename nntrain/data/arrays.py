"""Named input and target arrays for one split, and how splits are cut."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# JAX's CPU client uses a 64-byte aligned array in place; it copies any other one, and for
# a moment the data is in memory twice (numpy's big arrays start 16 bytes into a page).
DEVICE_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialized array whose data starts on a DEVICE_ALIGNMENT boundary, for data
    bound for the device."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + DEVICE_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % DEVICE_ALIGNMENT
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


@dataclass
class ArraySet:
    """One split: arrays per model input (`x`) and per model output (`y`), aligned by row."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray] = field(default_factory=dict)
    sample_weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def take(self, rows: np.ndarray | slice) -> ArraySet:
        weight = None if self.sample_weight is None else self.sample_weight[rows]
        return ArraySet(
            {k: v[rows] for k, v in self.x.items()},
            {k: v[rows] for k, v in self.y.items()},
            weight,
        )

    def digest(self) -> str:
        """SHA-256 over every array, to record exactly which data a run saw."""
        h = hashlib.sha256()
        weights = {} if self.sample_weight is None else {"sample_weight": self.sample_weight}
        for group in (self.x, self.y, weights):
            for name in sorted(group):
                array = np.ascontiguousarray(group[name])
                h.update(f"{name}:{array.dtype}:{array.shape}".encode())
                h.update(array.data)
        return h.hexdigest()


def native_byte_order(array: np.ndarray) -> np.ndarray:
    """The array in this machine's byte order (files from MATLAB, R or Java are often
    big-endian, which JAX does not take); a copy only when the order differs."""
    if array.dtype.byteorder in ("=", "|") or array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))
