"""Checkpoints and atomic writes: round trips, damage detection, an interrupted swap, and
writes that fail part way."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nntrain import checkpoint, fsutil
from nntrain.checkpoint import CheckpointError


def sample_trees():
    params = {
        "dense": {"kernel": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) / 7,
                  "bias": jnp.array([0.5, -1.0, 2.0, 0.0])},
        "dense_1": {"kernel": jnp.full((4, 2), -0.25)},
    }
    optimizer = optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.adam)(
        learning_rate=0.003))
    opt_state = optimizer.init(params)
    grads = jax.tree.map(lambda x: jnp.ones_like(x) * 0.1, params)
    _, opt_state = optimizer.update(grads, opt_state, params)  # non-zero moments, count 1
    return {"params": params, "state": {}, "opt_state": opt_state,
            "step": jnp.int32(1234)}


def assert_trees_equal(a, b):
    leaves_a, def_a = jax.tree_util.tree_flatten(a)
    leaves_b, def_b = jax.tree_util.tree_flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_of_params_optimizer_state_and_a_scalar(tmp_path):
    trees = sample_trees()
    folder = tmp_path / "checkpoints" / "last"
    checkpoint.save(folder, trees, {"epoch": 3, "history": [{"loss": 0.5}]})
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.safetensors", "checkpoint.json"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last"]  # no leftovers

    arrays, meta = checkpoint.load(folder)
    assert meta["epoch"] == 3
    assert meta["history"] == [{"loss": 0.5}]
    assert meta["format"] == 1
    assert "params/dense/kernel" in arrays
    assert "opt_state/1/hyperparams/learning_rate" in arrays
    assert int(arrays["step"]) == 1234
    assert arrays["step"].shape == ()

    template = sample_trees()
    template = jax.tree.map(jnp.zeros_like, template)
    for name in ("params", "state", "opt_state"):
        restored = checkpoint.unflatten(template[name], checkpoint.subtree(arrays, name), "ckpt")
        assert_trees_equal(restored, trees[name])
    restored_state = checkpoint.unflatten(template["opt_state"],
                                          checkpoint.subtree(arrays, "opt_state"), "ckpt")
    adam = restored_state[1].inner_state[0]
    np.testing.assert_allclose(adam.mu["dense"]["bias"], 0.1 * 0.1 * np.ones(4), rtol=1e-6)
    assert int(adam.count) == 1
    assert float(restored_state[1].hyperparams["learning_rate"]) == pytest.approx(0.003)


def test_saving_again_replaces_the_checkpoint(tmp_path):
    folder = tmp_path / "last"
    checkpoint.save(folder, {"w": np.zeros(3, np.float32)}, {"epoch": 1})
    checkpoint.save(folder, {"w": np.ones(3, np.float32)}, {"epoch": 2})
    arrays, meta = checkpoint.load(folder)
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(arrays["w"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_template_with_another_shape_names_the_weight(tmp_path):
    trees = sample_trees()
    checkpoint.save(tmp_path / "ckpt", {"params": trees["params"]}, {})
    arrays, _ = checkpoint.load(tmp_path / "ckpt")
    template = jax.tree.map(jnp.zeros_like, trees["params"])
    template["dense_1"]["kernel"] = jnp.zeros((4, 3))
    with pytest.raises(CheckpointError) as info:
        checkpoint.unflatten(template, checkpoint.subtree(arrays, "params"), "runs/x/ckpt")
    message = str(info.value)
    assert "dense_1/kernel" in message
    assert "(4, 2)" in message and "(4, 3)" in message
    assert message.startswith("runs/x/ckpt: ")


def test_template_with_a_weight_the_checkpoint_lacks(tmp_path):
    trees = sample_trees()
    checkpoint.save(tmp_path / "ckpt", {"params": trees["params"]}, {})
    arrays, _ = checkpoint.load(tmp_path / "ckpt")
    template = {**trees["params"], "dense_2": {"kernel": jnp.zeros((2, 2))}}
    with pytest.raises(CheckpointError, match="lacks 1 weights.*dense_2/kernel"):
        checkpoint.unflatten(template, checkpoint.subtree(arrays, "params"), "ckpt")


def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_detected(tmp_path):
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, {"params": sample_trees()["params"]}, {})
    flip_byte(folder / "arrays.safetensors", 5)  # inside the last array's data
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(folder)


def test_a_truncated_arrays_file_is_detected(tmp_path):
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, {"params": sample_trees()["params"]}, {})
    path = folder / "arrays.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(folder)


def test_damaged_metadata_is_a_checkpoint_error(tmp_path):
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, {"w": np.zeros(2, np.float32)}, {})
    (folder / "checkpoint.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        checkpoint.load(folder)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "last")
    assert checkpoint.find(tmp_path / "last") is None


def test_crash_between_the_two_renames_still_loads(tmp_path):
    folder = tmp_path / "last"
    checkpoint.save(folder, {"w": np.arange(3, dtype=np.float32)}, {"epoch": 4})
    # the first rename of the next save moved `last` aside; the crash came before the second
    folder.rename(tmp_path / ".old-last")
    assert checkpoint.find(folder) == tmp_path / ".old-last"
    arrays, meta = checkpoint.load(folder)
    assert meta["epoch"] == 4
    np.testing.assert_array_equal(arrays["w"], [0.0, 1.0, 2.0])
    # the next save puts `last` back and clears the old copy
    checkpoint.save(folder, {"w": np.ones(3, np.float32)}, {"epoch": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert checkpoint.load(folder)[1]["epoch"] == 5


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "last"
    checkpoint.save(folder, {"w": np.zeros(2, np.float32)}, {"epoch": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_arrays", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(folder, {"w": np.ones(2, np.float32)}, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    arrays, meta = checkpoint.load(folder)
    assert meta["epoch"] == 1
    np.testing.assert_array_equal(arrays["w"], [0.0, 0.0])


def test_arrays_are_written_in_the_safetensors_format(tmp_path):
    """nntrain writes the arrays file itself (no intermediate copies); the safetensors library
    reads it back, every dtype and shape intact, 0-d and empty arrays included, and the
    checksum covers the bytes on disk."""
    import hashlib

    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    arrays = {
        "params/dense/kernel": rng.standard_normal((7, 3)).astype(np.float32),
        "params/dense/transposed": rng.standard_normal((3, 5)).T,  # float64, not contiguous
        "opt_state/count": np.int32(12),
        "opt_state/flags": np.array([True, False, True]),
        "state/ids": np.arange(9, dtype=np.uint8).reshape(3, 3),
        "state/big": np.arange(4, dtype=np.int64) * 2**40,
        "state/empty": np.zeros((0, 4), np.float16),
    }
    checkpoint.save(tmp_path / "ckpt", arrays, {"epoch": 3})
    on_disk = tmp_path / "ckpt" / checkpoint.ARRAYS
    read = load_file(str(on_disk))
    assert read.keys() == arrays.keys()
    for name, array in arrays.items():
        assert read[name].dtype == np.asarray(array).dtype, name
        assert read[name].shape == np.shape(array), name
        np.testing.assert_array_equal(read[name], array)
    meta = json.loads((tmp_path / "ckpt" / checkpoint.META).read_text())
    assert meta["arrays_sha256"] == hashlib.sha256(on_disk.read_bytes()).hexdigest()


# -- atomic writes -------------------------------------------------------------------------------


def test_atomic_writes_write_and_leave_no_temp_files(tmp_path):
    fsutil.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01\x02")
    fsutil.atomic_write_text(tmp_path / "b.txt", "héllo\n")
    fsutil.atomic_write_json(tmp_path / "c.json", {"epoch": 2, "loss": [0.5, 0.25]})
    fsutil.atomic_write_text(tmp_path / "b.txt", "replaced\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01\x02"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "replaced\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"epoch": 2, "loss": [0.5, 0.25]}


def test_atomic_write_gets_the_mode_open_would_give(tmp_path):
    fsutil.atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_write_failing_midway_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("old\n", encoding="utf-8")

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(fsutil.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        fsutil.atomic_write_text(path, "new content that never lands\n")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_of_unserialisable_json_keeps_the_old_content(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"ok": true}\n', encoding="utf-8")
    with pytest.raises(TypeError):
        fsutil.atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# -- the previous checkpoint, kept as a fallback ------------------------------------------------


def _save_epochs(folder: Path, *epochs: int) -> None:
    for epoch in epochs:
        checkpoint.save(folder, {"w": np.full(3, epoch, np.float32)}, {"epoch": epoch},
                        keep_previous=True)


def test_keep_previous_keeps_exactly_one_superseded_checkpoint(tmp_path):
    folder = tmp_path / "last"
    _save_epochs(folder, 1, 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last.prev"]
    assert checkpoint.load(folder)[1]["epoch"] == 3
    assert checkpoint.load(tmp_path / "last.prev")[1]["epoch"] == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_arrays", "no_meta", "empty",
                                    "edited_record"])
def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, damage):
    folder = tmp_path / "last"
    _save_epochs(folder, 1, 2)
    arrays_file = folder / "arrays.safetensors"
    if damage == "edited_record":  # valid JSON, but not what was saved
        meta = json.loads((folder / "checkpoint.json").read_text())
        (folder / "checkpoint.json").write_text(json.dumps({**meta, "epoch": "three"}))
    elif damage == "flip":
        flip_byte(arrays_file, 3)
    elif damage == "truncate":
        arrays_file.write_bytes(arrays_file.read_bytes()[:-4])
    elif damage == "no_arrays":
        arrays_file.unlink()
    elif damage == "no_meta":
        (folder / "checkpoint.json").unlink()
    else:
        arrays_file.unlink()
        (folder / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        checkpoint.load(folder)  # evaluate/predict: no silent substitution

    resumed = checkpoint.load_for_resume(folder)
    assert resumed.meta["epoch"] == 1
    np.testing.assert_array_equal(resumed.arrays["w"], [1, 1, 1])
    assert "damaged checkpoint" in resumed.warning and str(folder) in resumed.warning
    assert "previous checkpoint" in resumed.warning
    # the damaged one is set aside; the good one is `last` again, so saving keeps a fallback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last.damaged"]
    _save_epochs(folder, 2)
    assert checkpoint.load(tmp_path / "last.prev")[1]["epoch"] == 1


def test_resume_with_both_checkpoints_damaged_names_the_latest(tmp_path):
    folder = tmp_path / "last"
    _save_epochs(folder, 1, 2)
    flip_byte(folder / "arrays.safetensors", 3)
    flip_byte(tmp_path / "last.prev" / "arrays.safetensors", 3)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_for_resume(folder)
    assert str(folder / "arrays.safetensors") in info.value.message
    assert "previous checkpoint is damaged too" in info.value.hint


def test_resume_without_a_previous_checkpoint_reports_the_damage(tmp_path):
    folder = tmp_path / "last"
    _save_epochs(folder, 1)
    flip_byte(folder / "arrays.safetensors", 3)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load_for_resume(folder)


def test_crash_between_renames_with_keep_previous(tmp_path):
    folder = tmp_path / "last"
    _save_epochs(folder, 1, 2)
    # the next save removed last.prev, wrote its new folder, renamed last -> last.prev; crash
    shutil.rmtree(tmp_path / "last.prev")
    folder.rename(tmp_path / "last.prev")
    (tmp_path / ".tmp-last-99999").mkdir()  # the killed writer's unfinished folder
    (tmp_path / ".trash-.tmp-last-12345").mkdir()  # and a delete cut short before that
    assert checkpoint.load_for_resume(folder).meta["epoch"] == 2
    _save_epochs(folder, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "last.prev"]
    assert checkpoint.load(folder)[1]["epoch"] == 3
    assert checkpoint.load(tmp_path / "last.prev")[1]["epoch"] == 2


def test_full_disk_while_saving_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "last"
    _save_epochs(folder, 1, 2)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    with pytest.raises(fsutil.DiskFull) as info:
        _save_epochs(folder, 3)
    assert f"no space left on the device while writing the checkpoint {folder}" in str(
        info.value)
    assert "free space" in info.value.hint and "df -h" in info.value.hint
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert checkpoint.load_for_resume(folder).meta["epoch"] == 2


def test_full_disk_when_creating_the_checkpoint_folder(tmp_path, monkeypatch):
    folder = tmp_path / "last"
    _save_epochs(folder, 1)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.startswith(".tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(fsutil.DiskFull, match="while writing the checkpoint"):
        _save_epochs(folder, 2)
    monkeypatch.undo()
    assert checkpoint.load(folder)[1]["epoch"] == 1


def test_an_optimizer_state_of_another_layout_says_so(tmp_path):
    """Resuming needs the optimizer state as this nntrain keeps it: a checkpoint from another
    optimizer (or an older nntrain's Nadam) is refused with a message that says which part
    differs and that the weights themselves are fine."""
    from rich.console import Console

    from nntrain.build import prepare
    from nntrain.config.loader import load_config
    from nntrain.data.sources import load_dataset
    from nntrain.runs import create_run
    from nntrain.train.fit import Fitter

    tiny = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"

    def fitter_for(optimizer: str, run):
        loaded = load_config(tiny, ["fit.epochs=1", "fit.callbacks=[]",
                                    f"compile.optimizer={optimizer}"])
        setup = prepare(loaded)
        data = load_dataset(loaded.config.data, setup.io, tiny.parent, loaded.config.seed)
        return Fitter(setup, data, run, Console(quiet=True), True)

    run = create_run(tmp_path, "tiny")
    fitter_for("{sgd: {momentum: 0.9}}", run).fit()
    with pytest.raises(CheckpointError) as info:
        fitter_for("adam", run).restore()
    assert "(the optimizer's state)" in info.value.message
    assert "the weights are fine for evaluate and predict" in info.value.hint


def test_a_record_with_integer_keys_reads_back_as_saved(tmp_path):
    # a callback's state keyed by epoch: JSON writes the keys as strings, sorted otherwise
    state = {"callbacks": [{9: 1.0, 10: 2.0, 2: 0.5}], "epoch": 3}
    checkpoint.save(tmp_path / "last", {"w": np.zeros(2, np.float32)}, state)
    _, meta = checkpoint.load(tmp_path / "last")
    assert meta["callbacks"] == [{"9": 1.0, "10": 2.0, "2": 0.5}] and meta["epoch"] == 3


def test_a_writer_that_falls_behind_writes_only_the_newest_of_each(tmp_path, monkeypatch):
    """Epochs of milliseconds and a slow disk: the waiting writes are replaced by newer
    ones instead of piling up, and what lands is the last epoch's, consistent."""
    import csv
    import time

    from clirunner import nntrain

    tiny = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"
    real_save, saves = checkpoint.save, []

    def slow_save(folder, *args, **kwargs):
        saves.append(Path(folder).name)
        time.sleep(0.05)
        return real_save(folder, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", slow_save)
    result = nntrain("fit", str(tiny), "-q", "--epochs", "60", "--set", "fit.callbacks=[]",
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert saves.count("last") < 30  # one per epoch would be 60
    (run,) = tmp_path.glob("runs/*/*")
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 61))
    _, last = checkpoint.load(run / "checkpoints" / "last")
    assert last["epoch"] == 60 and len(last["history"]) == 60
    metrics = json.loads((run / "metrics.json").read_text())
    _, best = checkpoint.load(run / "checkpoints" / "best")
    assert best["epoch"] == metrics["best_epoch"] and metrics["epochs_completed"] == 60


def test_a_checkpoint_replaced_while_it_is_read_is_read_again(tmp_path, monkeypatch):
    """`nntrain evaluate` while the run trains: a new best may replace the folder between
    reading its record and its arrays. That is no damage: the new checkpoint is read."""
    folder = tmp_path / "best"
    checkpoint.save(folder, {"w": np.full(3, 1, np.float32)}, {"epoch": 1})
    read = checkpoint._read
    calls = []

    def replaced_midway(found):
        calls.append(found)
        if len(calls) == 1:
            checkpoint.save(folder, {"w": np.full(3, 2, np.float32)}, {"epoch": 2})
            raise CheckpointError(f"damaged checkpoint {found}: checkpoint.json is missing")
        return read(found)

    monkeypatch.setattr(checkpoint, "_read", replaced_midway)
    arrays, meta = checkpoint.load(folder)
    assert meta["epoch"] == 2 and arrays["w"].tolist() == [2, 2, 2] and len(calls) == 2

    calls.clear()  # a folder that stays the same and fails is damaged: said at once
    monkeypatch.setattr(checkpoint, "_read", lambda found: calls.append(found) or read(found))
    flip_byte(folder / "arrays.safetensors", 3)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(folder)
    assert len(calls) == 1


def test_exclusive_makes_a_second_writer_wait(tmp_path):
    import threading
    import time

    path = tmp_path / "metrics.json"
    order = []

    def second():
        with fsutil.exclusive(path):
            order.append("second")

    with fsutil.exclusive(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
