"""Named input and target arrays for one split, and how splits are cut."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nntrain.errors import DataError

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
    """One split: arrays per model input (`x`) and per model output (`y`), aligned by row;
    example weights for every output (`sample_weight`) or per output (`output_weights`)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray] = field(default_factory=dict)
    sample_weight: np.ndarray | None = None
    output_weights: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def take(self, rows: np.ndarray | slice) -> ArraySet:
        weight = None if self.sample_weight is None else self.sample_weight[rows]
        return ArraySet(
            {k: v[rows] for k, v in self.x.items()},
            {k: v[rows] for k, v in self.y.items()},
            weight,
            {k: v[rows] for k, v in self.output_weights.items()},
        )

    def weights(self) -> dict[str, np.ndarray]:
        """Every weight array by a name of its own: `sample_weight`, `sample_weight:<output>`."""
        named = {f"sample_weight:{k}": v for k, v in self.output_weights.items()}
        return named if self.sample_weight is None else \
            {"sample_weight": self.sample_weight, **named}

    def digest(self) -> str:
        """SHA-256 over every array, to record exactly which data a run saw."""
        h = hashlib.sha256()
        for group in (self.x, self.y, self.weights()):
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


def unreadable(path: Path, error: Exception, hint: str) -> DataError:
    """numpy's error for a file it cannot load, said for a user: numpy takes what is not an
    .npy or .npz for a pickle, and its message is about allow_pickle."""
    if "mmap length is greater than file size" in str(error):  # a memory-mapped .npy
        return DataError(f"cannot read {path}: it holds fewer bytes than its header declares",
                         "the file was cut short (an interrupted copy or save?): write it "
                         "again")
    reason = "object arrays need pickle, which nntrain never uses" if "Object" in str(error) \
        else "not an .npy or .npz file numpy wrote" if "pickle" in str(error) \
        else str(error) or "empty file"
    return DataError(f"cannot read {path}: {reason}", hint)


def read_numpy_file(path: Path, hint: str) -> np.ndarray | dict[str, np.ndarray]:
    """An .npy file's array, or an .npz archive's arrays by name (its members that are not
    arrays skipped), in native byte order; never unpickles. Anything unreadable (not a file
    numpy wrote, cut short, object arrays) is a DataError naming the file, with `hint`."""
    try:
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return native_byte_order(loaded)
            with loaded:
                found = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise unreadable(path, e, hint) from None
    except MemoryError as e:  # numpy's: a header that declares more than memory holds
        raise DataError(f"cannot read {path}: {e}", "its arrays are larger than this "
                        "machine's memory: check how the file was written; data this big "
                        "trains from a folder of .npy files, read as it is needed") from None
    # an .npz member that is not an .npy (a README, a JSON file) comes back as bytes
    return {key: native_byte_order(value) for key, value in found.items()
            if isinstance(value, np.ndarray)}
