"""Host memory: data the device uses in place, and freed heap handed back to the OS."""

from __future__ import annotations

import ctypes
import sys

import jax
import numpy as np
import pytest

from nntrain.data.arrays import DEVICE_ALIGNMENT, ArraySet, aligned_empty
from nntrain.data.idx import parse_idx, read_bytes, read_idx
from nntrain.train.memory import release_freed_memory
from nntrain.train.programs import to_device

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "malloc_trim"),
    reason="malloc_trim is glibc's")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("shape", [(3,), (5, 7, 3), (1000, 28, 28)])
def test_aligned_empty_starts_on_the_boundary(shape) -> None:
    for dtype in (np.uint8, np.float32, np.int64):
        array = aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype
        assert array.ctypes.data % DEVICE_ALIGNMENT == 0
        assert array.flags.c_contiguous and array.flags.writeable


def test_idx_images_are_aligned_writable_copies() -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    data = idx_bytes(images)
    parsed = parse_idx(data)
    np.testing.assert_array_equal(parsed, images)
    assert parsed.ctypes.data % DEVICE_ALIGNMENT == 0
    parsed[0, 0, 0] = 7  # writable, and not a view of the file's bytes
    assert data[4 + 12] == images[0, 0, 0]


@pytest.mark.parametrize("shape", [(60,), (50, 28, 28), (7, 3, 2, 5)])
def test_a_plain_idx_file_is_read_once_into_aligned_memory(tmp_path, shape) -> None:
    # the file's bytes land aligned and are the array itself: no second copy of the images
    values = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    (tmp_path / "images").write_bytes(idx_bytes(values))
    data = read_bytes(tmp_path / "images")
    parsed = parse_idx(data)
    np.testing.assert_array_equal(parsed, values)
    assert parsed.ctypes.data % DEVICE_ALIGNMENT == 0 and parsed.flags.writeable
    header = 4 + 4 * len(shape)
    assert parsed.ctypes.data == np.frombuffer(data, np.uint8).ctypes.data + header
    np.testing.assert_array_equal(read_idx(tmp_path / "images"), values)


def test_a_big_endian_idx_file_is_copied_into_native_order(tmp_path) -> None:
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 100_000
    header = bytes([0, 0, 0x0C, 2]) + np.array(values.shape, ">u4").tobytes()
    (tmp_path / "ints").write_bytes(header + values.astype(">i4").tobytes())
    parsed = read_idx(tmp_path / "ints")
    np.testing.assert_array_equal(parsed, values)
    assert parsed.dtype == np.int32 and parsed.ctypes.data % DEVICE_ALIGNMENT == 0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU device shares host memory")
def test_aligned_training_data_is_used_in_place_on_a_cpu() -> None:
    # the device array is the loaded array itself: the data is not in memory twice
    images = parse_idx(idx_bytes(np.arange(64 * 784).reshape(64, 28, 28) % 256))
    labels = aligned_empty((64,), np.int32)
    labels[:] = np.arange(64) % 10
    on_device = to_device(ArraySet({"image": images}, {"label": labels}))
    assert np.asarray(on_device["x"]["image"]).ctypes.data == images.ctypes.data
    assert np.asarray(on_device["y"]["label"]).ctypes.data == labels.ctypes.data


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@linux_glibc
def test_release_freed_memory_returns_the_heaps_free_pages() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks come from the heap (below glibc's mmap threshold); a block kept above
    # them stops the heap from shrinking by itself when they are freed
    blocks = [libc.malloc(64 * 1024) for _ in range(1600)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    guard = libc.malloc(64 * 1024)
    before_free = _resident_mib()
    for block in blocks:
        libc.free(block)
    after_free = _resident_mib()
    assert release_freed_memory() is True
    after_release = _resident_mib()
    libc.free(guard)
    assert after_free > before_free - 20  # free() alone kept the ~100 MiB
    assert after_release < after_free - 80


def test_memory_mapped_data_is_read_into_memory_for_the_device(tmp_path) -> None:
    # the device must not hold the file's mapping: rewriting the file would change the data
    np.save(tmp_path / "x.npy", np.arange(64 * 8, dtype=np.float32).reshape(64, 8))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    on_device = to_device(ArraySet({"x": mapped}, {}))
    np.save(tmp_path / "x.npy", np.zeros((64, 8), np.float32))
    np.testing.assert_array_equal(np.asarray(on_device["x"]["x"]),
                                  np.arange(64 * 8, dtype=np.float32).reshape(64, 8))
