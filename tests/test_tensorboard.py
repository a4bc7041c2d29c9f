"""The tensorboard callback as a user runs it: the event files it writes, read back with
TensorBoard's own reader, hold history.csv's figures per epoch (Keras's runs and tags), the
config as text and an HPARAMS record; --resume appends; log_dir stays inside the run; a
missing tensorboardX is a config error; profile_batch leaves a JAX profiler trace."""

from __future__ import annotations

import csv
import glob
import gzip
import importlib.util
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from clirunner import nntrain

from nntrain.config.callbacks import TensorBoardArgs
from nntrain.train import callbacks as cb

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")
EventAccumulator = event_accumulator.EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"




def tiny(folder: Path, tensorboard, epochs: int = 4) -> Path:
    """The tiny MLP (16 steps an epoch, 4 per compiled call) with a tensorboard callback."""
    data = yaml.safe_load(TINY.read_text())
    data["name"] = "tb"
    data["fit"].update(epochs=epochs, steps_per_execution=4)
    data["fit"]["callbacks"].append({"tensorboard": tensorboard})
    path = folder / "tb.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def read(folder: Path):
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_scalars_text_and_hparams_match_the_run_and_resume_appends(tmp_path: Path):
    config = tiny(tmp_path, {"log_dir": "logs/tb", "write_graph": True})
    first = nntrain("fit", str(config), "--epochs", "2", "-q", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    run = next(tmp_path.glob("runs/tb/*"))
    logs = run / "logs" / "tb"

    # a process killed after writing epoch 3's figures but before its checkpoint
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(logs / "train"), filename_suffix=f".{time.time_ns()}.0") as w:
        w.add_scalar("epoch_loss", 999.0, 2)
    resumed = nntrain("fit", "--resume", str(run), "--epochs", "4", "-q", cwd=tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert len(list((logs / "train").glob("events.out.tfevents.*"))) == 3  # appended

    rows = history(run)
    assert len(rows) == 4
    train, validation = read(logs / "train"), read(logs / "validation")
    assert sorted(train.Tags()["scalars"]) == [
        "epoch_accuracy", "epoch_learning_rate", "epoch_loss"]
    assert sorted(validation.Tags()["scalars"]) == ["epoch_accuracy", "epoch_loss"]
    for name in ("loss", "accuracy", "learning_rate"):
        seen = scalars(train, f"epoch_{name}")  # the stale 999 is purged by the resume
        assert [step for step, _ in seen] == [0, 1, 2, 3]  # Keras's steps: epochs from 0
        assert [v for _, v in seen] == pytest.approx([float(r[name]) for r in rows], rel=1e-5)
    for name in ("loss", "accuracy"):
        seen = scalars(validation, f"epoch_{name}")
        assert [step for step, _ in seen] == [0, 1, 2, 3]
        assert [v for _, v in seen] == pytest.approx(
            [float(r[f"val_{name}"]) for r in rows], rel=1e-5)

    # the config as text, from the run's config.yaml
    text = train.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: tb" in text and "tensorboard:" in text

    # HPARAMS: one session, rewritten at the resumed run's end
    assert len(list((logs / "hparams").glob("events.out.tfevents.*"))) == 1
    hparams = read(logs / "hparams")
    content = hparams.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    values = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
    assert values == {"optimizer": "adam", "learning_rate": pytest.approx(0.01),
                      "batch_size": 32, "epochs": 4, "layers": 4}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    tags = {m.name.tag for m in experiment.metric_infos}
    assert {"hparams/best_val_loss", "hparams/best_epoch", "hparams/last_loss",
            "hparams/last_val_accuracy"} <= tags
    metrics = json.loads((run / "metrics.json").read_text())
    assert scalars(hparams, "hparams/best_val_loss")[0][1] == \
        pytest.approx(metrics["best_value"], rel=1e-6)
    assert scalars(hparams, "hparams/best_epoch")[0][1] == metrics["best_epoch"]
    assert scalars(hparams, "hparams/last_loss")[0][1] == \
        pytest.approx(float(rows[-1]["loss"]), rel=1e-5)


@pytest.mark.parametrize(("log_dir", "message"), [
    ("../x", "must stay inside the run directory"),
    ("logs/../../x", "must stay inside the run directory"),
    ("/tmp/tb", "not an absolute path"),
    ("checkpoints", "checkpoints is the run's own"),
])
def test_log_dir_stays_inside_the_run_directory(tmp_path: Path, log_dir, message):
    config = tiny(tmp_path, {"log_dir": log_dir})
    result = nntrain("fit", str(config), "-q", cwd=tmp_path)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "fit.callbacks[2].tensorboard.log_dir" in output and message in output
    assert not (tmp_path / "runs").exists()


def test_profile_batch_and_update_freq_are_checked(tmp_path: Path):
    config = tiny(tmp_path, {"profile_batch": [5, 2], "update_freq": "batch"})
    output = " ".join(nntrain("validate", str(config), cwd=tmp_path).output.split())
    assert "tensorboard.profile_batch: a range [start, stop] needs start <= stop" in output
    assert "tensorboard.update_freq: expected one of 'epoch'" in output
    assert TensorBoardArgs(profile_batch=[10, 20]).profile_range() == (10, 20)
    assert TensorBoardArgs(profile_batch=3).profile_range() == (3, 3)
    assert TensorBoardArgs().profile_range() is None


def test_two_tensorboard_callbacks_need_two_folders(tmp_path: Path):
    data = yaml.safe_load(tiny(tmp_path, "tb").read_text())
    data["fit"]["callbacks"].append({"tensorboard": "tb/"})
    (tmp_path / "tb.yaml").write_text(yaml.safe_dump(data))
    result = nntrain("validate", str(tmp_path / "tb.yaml"), cwd=tmp_path)
    assert result.exit_code == 2
    assert "fit.callbacks[2] writes to tb already" in " ".join(result.output.split())


def test_missing_tensorboardx_is_a_config_error(tmp_path: Path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    result = nntrain("fit", str(tiny(tmp_path, "tb")), "-q", cwd=tmp_path)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "fit.callbacks[2].tensorboard: the tensorboard callback needs the tensorboardX " \
        "package" in output
    assert "pip install 'nntrain[tensorboard]'" in output
    assert not (tmp_path / "runs").exists()


def test_the_trace_covers_the_compiled_calls_holding_the_profiled_steps(tmp_path, monkeypatch):
    """Replays the loop's order of events: a call is reported after the next is dispatched."""
    import jax

    events: list = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda d: events.append("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))

    def replay(profile_batch, epochs=2, steps=16, k=4):
        events.clear()
        callback = cb.TensorBoard(TensorBoardArgs(profile_batch=profile_batch), tmp_path)
        trainer = SimpleNamespace(
            history=[], run=SimpleNamespace(path=tmp_path), quiet=True, console=None,
            steps_per_epoch=steps, programs=SimpleNamespace(steps_per_call=k), resume_step=0,
            checkpointer=SimpleNamespace(tracker=SimpleNamespace(best=None)))
        callback.on_train_begin(trainer)
        for epoch in range(epochs):
            callback.on_epoch_begin(epoch, trainer)
            for first in range(0, steps, k):
                events.append(("run", epoch * steps + first + 1, epoch * steps + first + k))
                if first:
                    callback.on_train_batch_end(first - 1, {}, trainer)
            callback.on_train_batch_end(steps - 1, {}, trainer)
            callback.on_epoch_end(epoch, {"loss": 1.0}, trainer)
            trainer.history.append({"epoch": epoch + 1, "loss": 1.0})
        callback.on_train_end(trainer)
        start, stop = events.index("start"), events.index("stop")
        assert events.count("start") == events.count("stop") == 1
        return [e[1:] for e in events[start:stop] if e[0] == "run"]

    # steps from 1 across epochs, as Keras counts batches; whole calls of 4 steps
    assert replay(3) == [(1, 4), (5, 8)]  # stops when its call is reported, after the next
    # the epoch's first two calls are dispatched before the first report
    assert replay(7) == [(1, 4), (5, 8), (9, 12)]
    assert replay([10, 14]) == [(9, 12), (13, 16)]
    assert replay(19) == [(17, 20), (21, 24)]  # in the second epoch
    assert replay([27, 30]) == [(25, 28), (29, 32)]
    assert replay([1, 40]) == [(1, 4), (5, 8), (9, 12), (13, 16), (17, 20), (21, 24),
                               (25, 28), (29, 32)]  # past the end: stopped at the end


def test_profile_batch_writes_a_jax_profiler_trace(tmp_path: Path):
    # step 20 is in the second epoch, so the trace holds no compilation
    config = tiny(tmp_path, {"profile_batch": 20}, epochs=2)
    result = nntrain("fit", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    if "profile_batch skipped" in result.output:
        pytest.skip("the JAX profiler does not start here: " + result.output)
    run = next(tmp_path.glob("runs/tb/*"))
    traces = glob.glob(str(run / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert traces and os.path.getsize(traces[0]) > 0
    assert "profile of training step 20 written to" in " ".join(result.output.split())
    chrome = glob.glob(str(run / "tensorboard" / "plugins" / "profile" / "*" / "*.json.gz"))
    if chrome:  # the trace viewer's copy: the compiled training calls ran inside it
        with gzip.open(chrome[0]) as f:
            assert b"_train_chunk" in f.read()
