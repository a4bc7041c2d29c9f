"""Checkpoints: arrays in safetensors (no pickle), everything else in JSON, swapped in whole.

A checkpoint is a folder holding `arrays.safetensors` and `checkpoint.json` (which records the
arrays file's SHA-256). Saving writes a fresh folder under a temporary name, then swaps it in
with two renames; if a crash falls between them, loading finds the previous folder under its
`.old-` name (or `.prev`, for the resume checkpoint, which keeps the previous one as a fallback
for a damaged latest one). Array keys are pytree paths: `params/dense_1/kernel`,
`opt_state/0/mu/...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from safetensors.numpy import save as save_bytes

from nntrain.errors import UserError
from nntrain.fsutil import disk_space, fsync_dir

ARRAYS = "arrays.safetensors"
META = "checkpoint.json"
FORMAT = 1
PREVIOUS = ".prev"


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or made for another model."""


def _key(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.DictKey):
            parts.append(str(p.key))
        elif isinstance(p, jax.tree_util.SequenceKey):
            parts.append(str(p.idx))
        elif isinstance(p, jax.tree_util.GetAttrKey):
            parts.append(p.name)
        else:
            parts.append(str(p))
    return "/".join(parts)


def flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def unflatten(template: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """Put `arrays` into the structure of `template`, checking every name and shape."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    missing = [_key(p) for p, _ in leaves if _key(p) not in arrays]
    if missing:
        raise CheckpointError(
            f"{where}: checkpoint lacks {len(missing)} weights the model has "
            f"(e.g. {', '.join(missing[:3])})",
            "the checkpoint was made for a different model; train this config anew",
        )
    for path, leaf in leaves:
        array = arrays[_key(path)]
        if tuple(array.shape) != tuple(leaf.shape):
            raise CheckpointError(
                f"{where}: weight {_key(path)} has shape {tuple(array.shape)} in the checkpoint "
                f"but {tuple(leaf.shape)} in the model",
                "the checkpoint was made for a different model; train this config anew",
            )
        out.append(array.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def previous(folder: Path) -> Path:
    """Where `save(..., keep_previous=True)` keeps the checkpoint it superseded."""
    return Path(folder).with_name(Path(folder).name + PREVIOUS)


def save(folder: Path, trees: dict[str, Any], meta: dict[str, Any], *,
         keep_previous: bool = False) -> None:
    """Write `trees` (name -> pytree) and `meta` as the checkpoint `folder`, atomically.

    With `keep_previous`, the checkpoint it replaces stays as `<folder>.prev`, a fallback if
    the newer one is ever found damaged. The one before that is removed before writing, so
    the disk holds at most two copies at any moment."""
    folder = Path(folder)
    with disk_space("the checkpoint", folder):  # any step may meet a full disk
        _save(folder, trees, meta, keep_previous)


def _save(folder: Path, trees: dict[str, Any], meta: dict[str, Any],
          keep_previous: bool) -> None:
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{folder.name}-{os.getpid()}"
    old = parent / f".old-{folder.name}"
    _finish_swap(folder)
    for trash in parent.glob(".trash-*"):  # a killed process's unfinished deletes
        shutil.rmtree(trash, ignore_errors=True)
    for leftover in parent.glob(f".tmp-{folder.name}-*"):  # a killed process's unfinished save
        _remove(leftover)
    if keep_previous:
        _remove(previous(folder))
    tmp.mkdir()
    try:
        arrays = {}
        for name, tree in trees.items():
            arrays.update({f"{name}/{k}" if k else name: v for k, v in flatten(tree).items()})
        digest = _write_arrays(tmp / ARRAYS, arrays)
        # the digest of the record as it will be read back (JSON keys are strings)
        record = json.loads(json.dumps({"format": FORMAT, "arrays_sha256": digest, **meta}))
        record["meta_sha256"] = _meta_digest(record)
        _write(tmp / META, json.dumps(record, indent=2).encode("utf-8"))
        fsync_dir(tmp)
        if keep_previous:
            if folder.exists():
                folder.rename(previous(folder))
            tmp.rename(folder)  # a crash just before this leaves only .prev: find() reads it
            fsync_dir(parent)
            return
        _remove(old)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        fsync_dir(parent)
        _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# numpy dtypes by their names in the safetensors format (little-endian, as numpy's native
# ones are on every machine JAX runs on)
_SAFETENSORS_DTYPES = {np.dtype(t): name for t, name in (
    (np.float64, "F64"), (np.float32, "F32"), (np.float16, "F16"), (np.int64, "I64"),
    (np.int32, "I32"), (np.int16, "I16"), (np.int8, "I8"), (np.uint64, "U64"),
    (np.uint32, "U32"), (np.uint16, "U16"), (np.uint8, "U8"), (np.bool_, "BOOL"))}


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write `arrays` as a safetensors file straight from their memory, hashing as it goes;
    returns the file's SHA-256. safetensors' own `save` copies every array into one buffer
    first, which took 3x the CPU time (0.09 s for 50 MB), time taken from the epoch that
    trains while a checkpoint is written. Other dtypes (bfloat16) go through the library."""
    if sys.byteorder != "little" or any(a.dtype not in _SAFETENSORS_DTYPES
                                        for a in arrays.values()):
        data = save_bytes(arrays)
        _write(path, data)
        return hashlib.sha256(data).hexdigest()
    header: dict[str, Any] = {}
    parts, offset = [], 0
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        array = array if array.flags.c_contiguous else array.copy(order="C")  # 0-d stays 0-d
        header[name] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        parts.append(memoryview(array.reshape(-1)).cast("B"))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library's does
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (len(text).to_bytes(8, "little"), text, *parts):
            f.write(chunk)
            digest.update(chunk)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    """Delete a folder: renamed away first, so a crash mid-delete never leaves a half
    checkpoint under a name that is read."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _finish_swap(folder: Path) -> None:
    """A crash between a save's renames leaves the newest checkpoint under .prev (or .old-);
    give it its name back before anything else is replaced."""
    if folder.exists():
        return
    for candidate in (previous(folder), folder.parent / f".old-{folder.name}"):
        if candidate.is_dir():
            candidate.rename(folder)
            return


def find(folder: Path) -> Path | None:
    """The checkpoint folder to read: itself, or, if a save was cut short between its two
    renames, the one it was replacing."""
    folder = Path(folder)
    for candidate in (folder, previous(folder), folder.parent / f".old-{folder.name}"):
        if candidate.is_dir():
            return candidate
    return None


def load(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint's arrays and metadata, verifying the arrays' checksum. A checkpoint
    replaced while it is read (a training run saving a new best) is read again."""
    tries = 0
    while True:
        found = find(folder)
        if found is None:
            raise CheckpointError(f"no checkpoint at {folder}", "the run has not finished an "
                                  "epoch yet, or its files were removed")
        before = _identity(found)
        try:
            read = _read(found)
            # the same folder before and after: not one save's record with the next's arrays
            if _identity(found) == before or tries == 4:
                return read
            tries += 1
        except CheckpointError:
            tries += 1
            if tries == 5 or _identity(found) == before:
                raise  # the same folder throughout: damaged
        time.sleep(0.05 * tries)


def _identity(folder: Path) -> int | None:
    try:
        return folder.stat().st_ino
    except OSError:
        return None


@dataclass
class Resumed:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    warning: str | None  # set when the latest checkpoint was damaged and .prev was used


def load_for_resume(folder: Path) -> Resumed:
    """Load the resume checkpoint `folder`; if it is damaged, fall back to `<folder>.prev`.

    After a fallback the damaged folder is kept as `<folder>.damaged` (for a look) and the
    previous one takes its name, so the next save again keeps a good one behind."""
    folder = Path(folder)
    try:
        arrays, meta = load(folder)
        return Resumed(arrays, meta, None)
    except CheckpointError as damage:
        prev = previous(folder)
        if find(folder) != folder or not prev.is_dir():
            raise
        try:
            arrays, meta = _read(prev)
        except CheckpointError as also:
            raise CheckpointError(damage.message, "the previous checkpoint is damaged too "
                                  f"({also.message}); train the config again in a new run"
                                  ) from None
        damaged = folder.with_name(folder.name + ".damaged")
        shutil.rmtree(damaged, ignore_errors=True)
        folder.rename(damaged)
        prev.rename(folder)
        fsync_dir(folder.parent)
        return Resumed(arrays, meta, f"{damage.message}; resuming from the previous checkpoint "
                       f"instead (the damaged one is kept as {damaged})")


def _read(found: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    for name in (META, ARRAYS):
        if not (found / name).is_file():
            raise CheckpointError(f"damaged checkpoint {found}: {name} is missing",
                                  "the checkpoint was cut short or its files were removed")
    try:
        meta = json.loads((found / META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"damaged checkpoint {found / META}: {e}") from None
    # the record (epoch, history, callbacks' state) is checked as the arrays are; a
    # checkpoint from before it had its own digest has none
    if "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]:
        raise CheckpointError(f"damaged checkpoint {found / META}: checksum mismatch",
                              "the file was changed or cut short; use another checkpoint")
    if _sha256(found / ARRAYS) != meta.get("arrays_sha256"):
        raise CheckpointError(f"damaged checkpoint {found / ARRAYS}: checksum mismatch",
                              "the file was changed or cut short; use another checkpoint")
    try:
        arrays = load_file(str(found / ARRAYS))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"damaged checkpoint {found / ARRAYS}: {e}") from None
    return arrays, meta


def _meta_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record without its own digest, in a canonical JSON form."""
    body = {k: v for k, v in record.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def subtree(arrays: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    prefix = name + "/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    return h.hexdigest()
