"""Checkpoints: arrays in safetensors (no pickle), everything else in JSON, swapped in whole.

A checkpoint is a folder holding `arrays.safetensors` and `checkpoint.json` (which records the
arrays file's SHA-256). Saving writes a fresh folder under a temporary name, then swaps it in
with two renames; if a crash falls between them, loading finds the previous folder under its
`.old-` name. Array keys are pytree paths: `params/dense_1/kernel`, `opt_state/0/mu/...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from nntrain.errors import UserError
from nntrain.fsutil import fsync_dir

ARRAYS = "arrays.safetensors"
META = "checkpoint.json"
FORMAT = 1


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


def save(folder: Path, trees: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write `trees` (name -> pytree) and `meta` as the checkpoint `folder`, atomically."""
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{folder.name}-{os.getpid()}"
    old = parent / f".old-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        arrays = {}
        for name, tree in trees.items():
            arrays.update({f"{name}/{k}" if k else name: v for k, v in flatten(tree).items()})
        save_file(arrays, str(tmp / ARRAYS))
        digest = _sha256(tmp / ARRAYS)
        with open(tmp / META, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "arrays_sha256": digest, **meta}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / ARRAYS, "rb") as f:
            os.fsync(f.fileno())
        fsync_dir(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find(folder: Path) -> Path | None:
    """The checkpoint folder to read: itself, or the previous one if a swap was cut short."""
    folder = Path(folder)
    if (folder / META).exists():
        return folder
    old = folder.parent / f".old-{folder.name}"
    return old if (old / META).exists() else None


def load(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint's arrays and metadata, verifying the arrays' checksum."""
    found = find(folder)
    if found is None:
        raise CheckpointError(f"no checkpoint at {folder}",
                              "the run has not finished an epoch yet, or its files were removed")
    try:
        meta = json.loads((found / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"damaged checkpoint {found / META}: {e}") from None
    if _sha256(found / ARRAYS) != meta.get("arrays_sha256"):
        raise CheckpointError(f"damaged checkpoint {found / ARRAYS}: checksum mismatch",
                              "the file was changed or cut short; use another checkpoint")
    try:
        arrays = load_file(str(found / ARRAYS))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"damaged checkpoint {found / ARRAYS}: {e}") from None
    return arrays, meta


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
