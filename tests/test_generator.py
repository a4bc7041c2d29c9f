"""Data from the user's Python function (`data.generator`): trains like the same arrays from
a file, resumes mid-epoch to the same weights, needs --trust-code to be read back, and
reports broken generators as data errors."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import numpy as np
import pytest
from clirunner import nntrain
from runfiles import history_rows
from safetensors.numpy import load_file

from nntrain.errors import DataError

MODULE = '''
import numpy as np

rng = np.random.default_rng(0)
Y = rng.integers(0, 3, 530).astype(np.int32)
X = (rng.normal(size=(530, 8)) + Y[:, None]).astype(np.float32)
SPLITS = {"train": slice(0, 410), "validation": slice(410, 470), "test": slice(470, 530)}
CALLS = []


def batches(split, epoch):
    CALLS.append((split, epoch))
    rows = SPLITS[split]
    x, y = X[rows], Y[rows]
    order = np.random.default_rng(epoch).permutation(len(x)) if split == "train" \\
        else np.arange(len(x))
    for i in range(0, len(x), 32):  # 410 = 12 x 32 + 26: the last batch is short
        take = order[i:i + 32]
        yield x[take], y[take]


def broken(split, epoch):
    yield X[:32], Y[:32]
    raise RuntimeError("disk on fire")


def fails_at_once(split, epoch):
    raise OSError("no such share: //data/fashion")


def too_big(split, epoch):
    yield X[:64], Y[:64]


def weights_later(split, epoch):
    yield X[:32], Y[:32]
    yield X[32:64], Y[32:64], np.ones(32)


def wider_later(split, epoch):
    yield X[:32], Y[:32]
    yield np.hstack([X[32:64], X[32:64]]), Y[32:64]


def bad_labels_later(split, epoch):
    yield X[:32], Y[:32]
    yield X[32:64], np.full(32, 7, np.int32)


def nan_in_epoch_2(split, epoch):
    for batch in batches(split, epoch):
        yield (batch[0] * np.nan if epoch == 1 and split == "train" else batch[0]), batch[1]


def no_validation(split, epoch):
    return None if split == "validation" else batches(split, epoch)

'''

CONFIG = """
name: generated
seed: 2
data:
%s
model:
  input: [8]
  layers:
    - dense: {units: 16, activation: relu}
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: {sgd: {learning_rate: 0.05}}
  metrics: [accuracy]
fit:
  epochs: 3
  batch_size: 32
  shuffle: false
"""


def _setup(tmp_path: Path, function: str = "batches") -> Path:
    (tmp_path / "my_data.py").write_text(MODULE)
    config = tmp_path / "gen.yaml"
    config.write_text(CONFIG % f"  generator: my_data:{function}")
    return config


def test_generator_trains_like_the_same_batches_from_a_file(tmp_path: Path):
    config = _setup(tmp_path)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "410 train, 60 validation" in result.output
    run = next(tmp_path.glob("runs/*/*"))
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["train"]["examples"] == 410
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"loss", "accuracy"}

    # the same batches, in the same order, as files: the file path trains to the same numbers
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_data_copy", tmp_path / "my_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # each epoch has its own order: compare one epoch, its batches saved in their order
    xs, ys = zip(*module.batches("train", 0), strict=True)
    np.savez(tmp_path / "train.npz", x=np.concatenate(xs), y=np.concatenate(ys))
    np.savez(tmp_path / "val.npz", x=module.X[410:470], y=module.Y[410:470])
    files = tmp_path / "files.yaml"
    files.write_text((CONFIG % "  train: train.npz\n  validation: {path: val.npz}")
                     .replace("epochs: 3", "epochs: 1"))
    one = nntrain("fit", str(files), "--runs-dir", str(tmp_path / "f"), cwd=tmp_path)
    gen1 = nntrain("fit", str(config), "--epochs", "1", "--runs-dir", str(tmp_path / "g"),
                   cwd=tmp_path)
    assert one.exit_code == 0 and gen1.exit_code == 0, one.output + gen1.output
    a = history_rows(next((tmp_path / "f").glob("*/*")))
    b = history_rows(next((tmp_path / "g").glob("*/*")))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert float(a[0][key]) == pytest.approx(float(b[0][key]), rel=1e-5), key


def test_reading_a_generator_run_back_needs_trust(tmp_path: Path):
    config = _setup(tmp_path)
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = next(tmp_path.glob("runs/*/*"))
    refused = nntrain("evaluate", str(run), cwd=tmp_path)
    assert refused.exit_code == 2 and "--trust-code" in refused.output
    trusted = nntrain("evaluate", str(run), "--trust-code", "--json", cwd=tmp_path)
    assert trusted.exit_code == 0, trusted.output
    figures = json.loads(trusted.output.strip().splitlines()[-1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert figures["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)


def test_reading_back_a_split_the_generator_does_not_give_says_whose_it_is(tmp_path: Path):
    """The hints name the generator (data.validation and data.test are refused with one),
    and predict, which reads splits from files only, says so first."""
    config = _setup(tmp_path, "no_validation")
    assert nntrain("fit", str(config), "-q", cwd=tmp_path).exit_code == 0
    run = next(tmp_path.glob("runs/*/*"))
    result = nntrain("evaluate", str(run), "--split", "validation", "--trust-code",
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "no validation split: my_data:no_validation('validation', 0) returned None" in said
    assert "add data.validation" not in said
    result = nntrain("predict", str(run), "--split", "validation", "--trust-code",
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "predict reads a split's examples from files, and this run's data comes from a " \
        "generator" in " ".join(result.output.split())


def test_resume_mid_run_gives_the_same_weights(tmp_path: Path):
    config = _setup(tmp_path)
    assert nntrain("fit", str(config), "-q", "--runs-dir", "whole", cwd=tmp_path).exit_code == 0
    part = nntrain("fit", str(config), "-q", "--epochs", "1", "--runs-dir", "part",
                   cwd=tmp_path)
    assert part.exit_code == 0
    run = next((tmp_path / "part").glob("*/*"))
    resumed = nntrain("fit", "--resume", str(run), "--trust-code", "-q", "--set", "fit.epochs=3",
                      "--runs-dir", "part", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    whole = next((tmp_path / "whole").glob("*/*"))
    assert history_rows(run) == history_rows(whole)
    a = load_file(str(run / "checkpoints/last/arrays.safetensors"))
    b = load_file(str(whole / "checkpoints/last/arrays.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("function, message", [
    ("broken", "raised RuntimeError: disk on fire"),
    ("too_big", "has 64 rows, more than fit.batch_size (32)"),
    ("missing", "has no function 'missing'"),
    ("weights_later", "batch 2 of 'train' differs from the first batch: input (8,) float32, "
                      "dense_1 () int32, with sample weights, the first input (8,) float32, "
                      "dense_1 () int32, without sample weights"),
    ("wider_later", "batch 2 of 'train' differs from the first batch: input (16,) float32"),
    ("bad_labels_later", "my_data:bad_labels_later: batch 2 of 'train': labels of 'dense_1' "
                         "range over 7..7, but the output has 3 classes"),
])
def test_broken_generators_are_data_errors(tmp_path: Path, function: str, message: str):
    config = _setup(tmp_path, function)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("function, message", [
    ("broken", "my_data:broken raised RuntimeError: disk on fire"),
    ("fails_at_once", "my_data:fails_at_once('train', 0) failed: OSError: no such share"),
])
def test_an_error_in_the_generator_says_how_to_see_its_traceback(tmp_path: Path, function: str,
                                                                 message: str):
    config = _setup(tmp_path, function)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert message in said and "Traceback" not in said
    assert "hint: the error is in the generator's own code: `nntrain --debug fit ...`" in said
    with pytest.raises(DataError) as raised:  # --debug lets it through, with the user's frame
        nntrain("--debug", "fit", str(config), cwd=tmp_path)
    frames = traceback.extract_tb(raised.value.__cause__.__traceback__)
    assert frames[-1].filename.endswith("my_data.py") and frames[-1].name == function


def test_a_bad_batch_in_a_later_epoch_is_a_data_error_that_keeps_the_epochs_done(
        tmp_path: Path):
    config = _setup(tmp_path, "nan_in_epoch_2")
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "my_data:nan_in_epoch_2: batch 1 of 'train': input 'input' has 256 NaN" in said
    assert "Traceback" not in result.output
    (run,) = (tmp_path / "runs" / "generated").iterdir()
    assert len(history_rows(run)) == 1  # the first epoch, trained and recorded


def test_generator_with_validation_split_is_a_config_error(tmp_path: Path):
    config = _setup(tmp_path)
    config.write_text(CONFIG % "  generator: my_data:batches\n  validation: {last: 10}")
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2
    assert "drop data.validation" in result.output


def test_callbacks_watch_a_generators_validation_figures(tmp_path: Path):
    """early_stopping's default monitor is val_loss: with a generator that gives a validation
    split it works; without one, the config error names the generator."""
    config = _setup(tmp_path)
    config.write_text(config.read_text() + "  callbacks: [early_stopping, {model_checkpoint: "
                      "{save_best_only: false, filepath: 'e{epoch}-{val_accuracy:.2f}'}}]\n")
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "Feeding the batches of my_data:batches to the device" in result.output
    (run,) = tmp_path.glob("runs/*/*")
    assert any(p.name.startswith("e3-0.") for p in (run / "checkpoints").iterdir())
    config.write_text(config.read_text().replace("my_data:batches", "my_data:no_validation"))
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "fit.callbacks[0].early_stopping.monitor" in result.output
    assert "the generator gives no 'validation' split" in result.output
    assert len(list(tmp_path.glob("runs/*/*"))) == 1  # nothing new written


def test_validation_batch_size_does_not_apply_to_a_generator(tmp_path: Path):
    config = _setup(tmp_path)
    result = nntrain("validate", str(config), "--set", "fit.validation_batch_size=64",
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "fit.validation_batch_size" in result.output and "generator" in result.output


def test_a_layer_that_adapts_to_the_data_is_refused_before_training(tmp_path: Path):
    config = _setup(tmp_path)
    config.write_text(config.read_text().replace(
        "  layers:\n", "  layers:\n    - normalization\n"))
    for command in ("validate", "fit"):
        result = nntrain(command, str(config), cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert "layer 'normalization' (normalization) adapts to the training data, which a " \
            "generator does not hold" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()
    given = config.read_text().replace("- normalization", "- normalization: {mean: 0, variance: 1}")
    config.write_text(given)
    assert nntrain("validate", str(config), cwd=tmp_path).exit_code == 0


def test_lr_find_on_generated_data_says_it_needs_data_in_memory(tmp_path: Path):
    config = _setup(tmp_path)
    result = nntrain("lr-find", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "lr-find reads its batches from data in memory" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()
