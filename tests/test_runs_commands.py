"""Reading runs back: `nntrain runs`, `runs compare`, `runs show`, `plot`, `schema`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from clirunner import nntrain

from nntrain.plotting import plot_history
from nntrain.runs import Run, resolve_run, runs_newest_first, start_order

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"




def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def line_of(output: str, text: str) -> str:
    lines = [line for line in output.splitlines() if text in line]
    assert len(lines) == 1, (text, output)
    return lines[0]


def clone(run: Path, name: str, stamp: str, **info) -> Path:
    """A copy of a finished run under another name and start, with run.json changed."""
    target = run.parents[1] / name / stamp
    shutil.copytree(run, target)
    record = json.loads((target / "run.json").read_text())
    record["start"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.strptime(stamp, "%Y%m%d-%H%M%S"))
    for key in ("session_start", "seconds_before"):  # one session, from the new start
        record.pop(key, None)
    record.update(info)
    (target / "run.json").write_text(json.dumps(record))
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """runs/ with two real fits (tiny_mlp, and tiny_b with other values) and copies of the
    first made failed, interrupted, running, running-but-gone and damaged."""
    work = tmp_path_factory.mktemp("runs")
    assert nntrain("fit", str(TINY), "-q", cwd=work).exit_code == 0
    time.sleep(1.0)  # runs are named by the second they start: tiny_b is the newer one
    result = nntrain("fit", str(TINY), "-q", "--epochs", "3", "--set", "name=tiny_b",
                     "--set", "model.layers.1.dense.units=8", "--set",
                     "compile.optimizer.adam.learning_rate=0.05", cwd=work)
    assert result.exit_code == 0, result.output
    (first,) = (work / "runs" / "tiny_mlp").iterdir()
    clone(first, "old", "20200101-100000", status="failed",
          start="2020-01-01T10:00:00+0000", end="2020-01-01T10:00:07+0000")
    clone(first, "old", "20200101-110000", status="stopped", stop_reason="interrupted",
          start="2020-01-01T11:00:00+0000", end="2020-01-01T11:10:00+0000")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    gone = clone(first, "old", "20200101-120000", status="running", end=None,  # its process
                 start="2020-01-01T12:00:00+0000", host=socket.gethostname(),  # has ended
                 pid=int(ended.stdout))
    an_hour_ago = time.time() - 3600
    for path in gone.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    clone(first, "old", "20200101-130000", status="running", end=None,  # the newest start
          start=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + 2)),
          host=socket.gethostname(), pid=os.getpid())  # trained by a live process
    damaged = clone(first, "old", "20200101-140000")
    (damaged / "run.json").write_text('{"name": "old", "sta')
    return work


def test_runs_lists_every_status_newest_first(work: Path):
    result = nntrain("runs", cwd=work)
    assert result.exit_code == 0, result.output
    out = result.output
    # newest start first: the live copy started now; a damaged run.json: the folder's stamp
    labels = ["old/20200101-130000", "tiny_b/", "tiny_mlp/", "old/20200101-140000",
              "old/20200101-120000", "old/20200101-110000", "old/20200101-100000"]
    positions = [out.index(label) for label in labels]
    assert positions == sorted(positions), out
    first = line_of(out, "tiny_mlp/")
    metrics = json.loads(next((work / "runs" / "tiny_mlp").glob("*/metrics.json")).read_text())
    assert "completed" in first and "4/4" in first
    # runs of one config: the monitor and each test figure named once, in the header
    assert "best val_loss (epoch)" in out and "test loss" in out and "test accuracy" in out
    assert f"  {metrics['best_value']:.4f} ({metrics['best_epoch']})  " in first
    assert first.split()[-3:-1] == [f"{metrics['test'][k]:.4f}" for k in ("loss", "accuracy")]
    assert "3/3" in line_of(out, "tiny_b/")
    assert "failed" in line_of(out, "20200101-100000") and "7.0s" in line_of(out, "-100000")
    interrupted = line_of(out, "20200101-110000")
    assert "stopped (interrupted)" in interrupted and "10m00s" in interrupted
    # run.json says running, but no process holds the run: it was killed
    assert "killed" in line_of(out, "20200101-120000")
    assert "killed: run.json says running, but no process trains it" in " ".join(out.split())
    live = line_of(out, "20200101-130000")
    assert "running" in live and "killed" not in live
    assert "damaged" in line_of(out, "old/20200101-140000  ")
    assert "old/20200101-140000: run.json is damaged" in out
    assert "7 runs" in out


def test_runs_filters_by_name_or_pattern(work: Path):
    result = nntrain("runs", "tiny_mlp", cwd=work)
    assert result.exit_code == 0
    assert "tiny_mlp/" in result.output and "tiny_b/" not in result.output
    result = nntrain("runs", "tiny_*", cwd=work)
    assert "tiny_mlp/" in result.output and "tiny_b/" in result.output
    assert "old/" not in result.output
    result = nntrain("runs", "nope", cwd=work)
    assert result.exit_code == 0
    assert "no runs named 'nope'" in result.output and "tiny_mlp" in result.output
    result = nntrain("runs", "list", "old", "--runs-dir", str(work / "runs"))
    assert result.exit_code == 0 and "5 runs" in result.output


def test_runs_on_an_empty_or_missing_folder(tmp_path: Path):
    for folder in (tmp_path / "runs", tmp_path / "missing"):
        folder.mkdir(exist_ok=folder.name == "runs")
        if folder.name == "missing":
            folder.rmdir()
        result = nntrain("runs", "--runs-dir", str(folder))
        assert result.exit_code == 0, result.output
        assert "nntrain fit CONFIG" in result.output
        assert "Traceback" not in result.output
    (tmp_path / "a_file").write_text("not runs")
    result = nntrain("runs", "--runs-dir", str(tmp_path / "a_file"))
    assert result.exit_code == 2
    assert "a_file is a file, not a folder of runs" in result.output


def test_compare_shows_only_differing_config_values_and_both_figures(work: Path):
    result = nntrain("runs", "compare", "tiny_mlp", "tiny_b", cwd=work)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "4 of" in out and "values differ" in out
    for key, a, b in (("name", "tiny_mlp", "tiny_b"), ("model.layers.1.dense.units", "16", "8"),
                      ("compile.optimizer.adam.learning_rate", "0.01", "0.05"),
                      ("fit.epochs", "4", "3")):
        row = line_of(out, f" {key} ")
        assert row.index(a) < row.index(b), row
    assert "fit.batch_size" not in out and "model.input" not in out
    metrics = [json.loads(p.read_text()) for p in (next((work / "runs" / name).glob(
        "*/metrics.json")) for name in ("tiny_mlp", "tiny_b"))]
    row = line_of(out, "test accuracy")
    assert f"{metrics[0]['test']['accuracy']:.4f}" in row
    assert f"{metrics[1]['test']['accuracy']:.4f}" in row
    row = line_of(out, "│ epochs ")
    assert row.index("4/4") < row.index("3/3")
    assert "data: the same examples" in out


def test_compare_identical_damaged_and_unknown_runs(work: Path):
    result = nntrain("runs", "compare", "tiny_mlp", "old/20200101-100000", cwd=work)
    assert result.exit_code == 0, result.output  # a copy: the same config, another status
    assert "config: identical" in result.output
    row = line_of(result.output, "│ status ")
    assert row.index("completed") < row.index("failed")
    result = nntrain("runs", "compare", "old/20200101-140000", "tiny_mlp", cwd=work)
    assert result.exit_code == 0, result.output
    assert "run.json is damaged" in result.output
    result = nntrain("runs", "compare", "tiny_mlp", "nope", cwd=work)
    assert result.exit_code == 2
    assert "no run found at 'nope'" in result.output and "Traceback" not in result.output


def test_show_prints_status_figures_summary_and_config(work: Path):
    result = nntrain("runs", "show", "tiny_mlp", cwd=work)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "completed" in out.splitlines()[0]
    assert "Total params: 323" in out  # summary.txt
    assert "units: 16" in out and "name: tiny_mlp" in out  # config.yaml
    assert "test (best weights)" in out and "last epoch (4)" in out
    assert "train 500  validation 100  test 100" in out
    result = nntrain("runs", "show", "old/20200101-140000", cwd=work)
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output.splitlines()[0]
    result = nntrain("runs", "show", "old/20200101-120000", cwd=work)
    assert "killed" in result.output.splitlines()[0] and "fit --resume" in result.output


def test_a_silent_run_of_another_machine_is_marked_doubtful(
        work: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "another-machine")  # a shared disk
    out = nntrain("runs", cwd=work).output
    assert "running?" in line_of(out, "20200101-120000")  # silent for an hour: maybe gone
    live = line_of(out, "20200101-130000")
    assert "running" in live and "running?" not in live
    result = nntrain("runs", "show", "old/20200101-120000", cwd=work)
    assert "running?" in result.output and "fit --resume" in result.output
    result = nntrain("runs", "show", "nothing/here", cwd=work)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_plot_overlays_runs_into_one_png(work: Path):
    result = nntrain("plot", "tiny_mlp", "tiny_b", cwd=work)
    assert result.exit_code == 0, result.output
    assert "wrote plot.png" in result.output
    assert png_size(work / "plot.png") == (1000, 435)  # loss and accuracy panels, the legend
    out = work / "figures" / "accuracy.png"
    result = nntrain("plot", "tiny_mlp", "tiny_b", "latest", "--metric", "val_accuracy",
                     "--output", str(out), cwd=work)
    assert result.exit_code == 0, result.output
    assert png_size(out) == (700, 460)  # one panel, three runs in the legend
    # a metric's other name finds the figure its runs logged
    result = nntrain("plot", "tiny_mlp", "--metric", "val_acc", "--output",
                     str(work / "figures" / "acc.png"), cwd=work)
    assert result.exit_code == 0, result.output


def test_plot_errors_exit_2(work: Path, tmp_path: Path):
    bad = nntrain("plot", "tiny_mlp", "--metric", "recall", cwd=work)
    assert bad.exit_code == 2 and "loss, accuracy" in bad.output
    bad = nntrain("plot", "tiny_mlp", "--output", str(tmp_path / "x.txt"), cwd=work)
    assert bad.exit_code == 2 and ".png" in bad.output
    bad = nntrain("plot", "nope", cwd=work)
    assert bad.exit_code == 2 and "no run found" in bad.output
    empty = clone(next((work / "runs" / "tiny_mlp").iterdir()), "fresh", "20200101-000000")
    (empty / "history.csv").unlink()
    bad = nntrain("plot", "fresh", cwd=work)
    shutil.rmtree(empty.parent)
    assert bad.exit_code == 2 and "history.csv is missing, though the run finished" in \
        " ".join(bad.output.split())
    assert not (tmp_path / "x.txt").exists()


def test_plot_never_writes_over_a_runs_records(work: Path, tmp_path: Path):
    (run,) = (work / "runs" / "tiny_mlp").iterdir()
    (other,) = (work / "runs" / "tiny_b").iterdir()
    before = (other / "history.png").read_bytes()
    for target in (other / "history.png", run / "checkpoints" / "best" / "x.png",
                   run / "curves.png"):
        bad = nntrain("plot", "tiny_mlp", "-o", str(target), cwd=work)
        assert bad.exit_code == 2, bad.output
        assert "is inside the run directory" in " ".join(bad.output.split())
    assert (other / "history.png").read_bytes() == before
    assert not (run / "curves.png").exists()
    assert not (run / "checkpoints" / "best" / "x.png").exists()
    # redrawing a run's own history.png, as the warning of a failed drawing suggests
    redraw = nntrain("plot", str(run), "-o", str(run / "history.png"), cwd=work)
    assert redraw.exit_code == 0, redraw.output


def test_plot_of_a_validation_figure_runs_never_logged_is_an_error(work: Path, tmp_path: Path):
    bare = clone(next((work / "runs" / "tiny_mlp").iterdir()), "bare", "20200101-000000")
    rows = (bare / "history.csv").read_text().splitlines()
    keep = [i for i, c in enumerate(rows[0].split(",")) if not c.startswith("val_")]
    (bare / "history.csv").write_text("\n".join(
        ",".join(row.split(",")[i] for i in keep) for row in rows) + "\n")
    bad = nntrain("plot", "bare", "--metric", "val_loss", "-o", str(tmp_path / "p.png"),
                  cwd=work)
    shutil.rmtree(bare.parent)
    assert bad.exit_code == 2
    assert "--metric val_loss: the runs have no validation figures" in bad.output
    assert not (tmp_path / "p.png").exists()


def test_plot_gives_each_of_many_runs_its_own_colour():
    from nntrain.plotting import _colours

    for count in (3, 11, 20, 25):
        assert len(set(map(str, _colours(count)))) == count


def test_a_run_without_its_config_yaml_is_said_to_be_damaged(work: Path):
    broken = clone(next((work / "runs" / "tiny_mlp").iterdir()), "noconfig", "20200101-000000")
    (broken / "config.yaml").unlink()
    listed = nntrain("runs", cwd=work)
    compared = nntrain("runs", "compare", "tiny_mlp", "noconfig", cwd=work)
    shown = nntrain("runs", "show", "noconfig", cwd=work)
    shutil.rmtree(broken.parent)
    assert "config.yaml is missing" in " ".join(listed.output.split())
    assert "config: cannot compare, a config.yaml is damaged or missing" in compared.output
    assert "config.yaml is missing" in " ".join(shown.output.split())


def test_a_run_without_its_history_says_so(work: Path):
    broken = clone(next((work / "runs" / "tiny_mlp").iterdir()), "nohistory", "20200101-000000")
    (broken / "history.csv").unlink()
    shown = nntrain("runs", "show", "nohistory", cwd=work)
    shutil.rmtree(broken.parent)
    assert "history.csv is missing, though epochs were finished" in " ".join(shown.output.split())


def test_history_png_has_a_panel_per_figure_three_to_a_row(tmp_path: Path):
    names = ["loss", "out_loss", "aux_loss", "out_mae", "aux_mae"]
    history = [{"epoch": e, **{n: 1 / e for n in names}, **{f"val_{n}": 1.1 / e for n in names},
                "learning_rate": 0.01, "seconds": 0.1} for e in range(1, 6)]
    plot_history(history, tmp_path / "h.png", title="two outputs")
    assert png_size(tmp_path / "h.png") == (1500, 760)  # 3 + 2 panels, a title
    for row in history:
        row["learning_rate"] = 0.01 / row["epoch"]
    plot_history(history, tmp_path / "h.png")
    assert png_size(tmp_path / "h.png") == (1500, 720)  # a learning-rate panel, no title


def test_run_folders_sort_by_start_and_suffix(tmp_path: Path):
    paths = [tmp_path / f"runs/a/20260101-000000{s}" for s in ("", "-1", "-9", "-10")]
    for path in paths:  # started in the same second: the suffix orders them
        path.mkdir(parents=True)
        (path / "run.json").write_text('{"start": "2026-01-01T00:00:00+0000"}')
    assert sorted(reversed(paths), key=start_order) == paths
    assert Run(paths[3]).label == "a/20260101-000000-10"
    assert resolve_run("latest", tmp_path / "runs").path == paths[3]
    assert resolve_run("a", tmp_path / "runs").path == paths[3]


def test_latest_is_the_last_started_run_even_beside_a_tunes_trials(tmp_path: Path):
    """`fit runs/t/best.yaml` after `tune` puts a run named t beside trial-0000..0002:
    `latest`, `evaluate t` and `runs` must pick that run, not the last trial by name."""
    root = tmp_path / "runs"
    started = {"t/trial-0000": "2026-01-01T10:00:02+0100",
               "t/trial-0001": "2026-01-01T10:00:05+0100",
               "t/trial-0002": "2026-01-01T10:00:09+0100",
               "t/20260101-090100": "2026-01-01T09:01:00+0000",
               "u/20260101-090000": "2026-01-01T09:00:00+0000"}
    for name, start in started.items():
        (root / name).mkdir(parents=True)
        (root / name / "run.json").write_text(json.dumps({"start": start}))
        (root / name / "config.yaml").write_text(f"name: {name.split('/')[0]}\n")
    newest = root / "t" / "20260101-090100"  # 10:01 in +0100: after every trial
    assert resolve_run("latest", root).path == newest
    assert resolve_run("t", root).path == newest
    assert [r.path.name for r in runs_newest_first(root)] == [
        "20260101-090100", "trial-0002", "trial-0001", "trial-0000", "20260101-090000"]
    result = nntrain("runs", "--runs-dir", str(root))
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()
              if line.startswith(("t/", "u/"))]
    assert listed == ["t/20260101-090100", "t/trial-0002", "t/trial-0001", "t/trial-0000",
                      "u/20260101-090000"]


def test_schema_is_json_schema_for_editors(tmp_path: Path, work: Path):
    result = nntrain("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["title"] == "nntrain config"
    assert {"data", "model", "compile", "fit"} <= set(schema["properties"])
    assert "epochs" in schema["definitions"]["FitConfig"]["properties"]
    result = nntrain("schema", "--output", str(tmp_path / "nntrain.schema.json"))
    assert result.exit_code == 0 and "yaml-language-server: $schema=" in result.output
    assert json.loads((tmp_path / "nntrain.schema.json").read_text()) == schema

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    configs = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("tests/configs/*.yaml"),
                      *ROOT.glob("examples/*/*.yaml"),
                      *work.glob("runs/*/*/config.yaml")])  # as written back by fit
    assert len(configs) > 8
    for path in configs:
        errors = [f"{list(e.absolute_path)}: {e.message}"
                  for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path, errors)
    # Keras's class names and serialized entries, which validate reads: the schema takes them
    keras_forms = yaml.safe_load(TINY.read_text())
    keras_forms["model"]["layers"] = ["Flatten", {"Dense": {"units": 8}}, "BatchNormalization",
                                      {"dense": {"units": 3, "activation": "softmax"}}]
    keras_forms["compile"].update(
        loss="SparseCategoricalCrossentropy", metrics=["SparseCategoricalAccuracy"],
        optimizer={"class_name": "Adam", "config": {"learning_rate": 0.01},
                   "module": "keras.optimizers", "registered_name": None})
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(keras_forms)]
    assert not errors, errors
    (tmp_path / "keras_forms.yaml").write_text(yaml.safe_dump(keras_forms))
    result = nntrain("validate", str(tmp_path / "keras_forms.yaml"), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(TINY.read_text())
    config["model"]["layers"][1]["dense"]["unit"] = 16
    config["compile"]["optimizer"] = "sgdd"
    config["fit"]["epoch"] = 3
    where = sorted(tuple(e.absolute_path) for e in validator.iter_errors(config))
    assert where == [("compile", "optimizer"), ("fit",), ("model", "layers", 1)]

def test_an_output_is_written_through_a_link_and_never_over_a_device_pipe_or_folder(
        tmp_path: Path):
    """--output replaces its file whole (written beside it, then renamed): a symbolic link's
    file is the one replaced, as a shell's `>` writes it, and a pipe or folder is refused
    rather than swapped for a file."""
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    result = nntrain("schema", "--output", str(tmp_path / "link.json"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "target.json").read_text())["title"] == "nntrain config"
    os.mkfifo(tmp_path / "pipe")
    for path, kind in [(tmp_path / "pipe", "not a regular file"), (tmp_path, "a folder")]:
        for command in (["schema"], ["plot", "latest"], ["predict", "latest"]):
            result = nntrain(*command, "--output", str(path))
            assert result.exit_code == 2, (command, result.output)
            assert f"--output {path} is {kind}" in " ".join(result.output.split())
    assert stat.S_ISFIFO((tmp_path / "pipe").lstat().st_mode)
    # /dev/stdout may lead to a file the shell appends to (`>> log`): never replaced
    result = nntrain("schema", "--output", "/dev/stdout")
    assert result.exit_code == 2 and "--output /dev/stdout is a stream or a device" in \
        " ".join(result.output.split())
    (tmp_path / "loop").symlink_to("loop")
    result = nntrain("schema", "--output", str(tmp_path / "loop"))
    assert result.exit_code == 2 and "a loop of symbolic links" in result.output
    assert (tmp_path / "loop").is_symlink()



def test_reading_commands_do_not_import_jax(work: Path):
    code = ("import sys\nfrom nntrain import cli\n"
            "for args in (['runs'], ['runs', 'show', 'latest'], ['runs', 'compare', 'latest',"
            " 'tiny_mlp'], ['plot', 'latest', '-o', 'nojax.png'], ['schema']):\n"
            "    sys.argv = ['nntrain', *args]\n"
            "    try:\n        cli.main()\n    except SystemExit as e:\n"
            "        assert not e.code, (args, e.code)\n"
            "print('JAX LOADED' if 'jax' in sys.modules else 'NO JAX', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work)
    assert "NO JAX" in out.stderr, out.stdout[-2000:] + out.stderr


def test_run_json_keeps_every_change_made_from_several_threads(tmp_path: Path):
    """The checkpoint writer thread and the main thread both update run.json (a resume
    records its epoch count on one and `resumed` on the other): no change may be lost."""
    run = Run(tmp_path)
    run.update_info(status="running")

    def change(i: int) -> None:
        for j in range(20):
            run.update_info(**{f"key{i}": j})

    threads = [threading.Thread(target=change, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert run.info() == {"status": "running", **{f"key{i}": 19 for i in range(8)}}


def test_a_resumed_runs_time_leaves_out_the_time_between_its_sessions(tmp_path: Path):
    from nntrain.runs import Run
    from nntrain.runs_view import view_run

    folder = tmp_path / "runs" / "t" / "20260101-100000"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "status": "completed", "start": "2026-01-01T10:00:00+0000",
        "session_start": "2026-01-02T09:00:00+0000", "seconds_before": 30.0,
        "end": "2026-01-02T09:00:45+0000"}))
    assert view_run(Run(folder)).duration() == 75.0  # 30 s, a day apart, then 45 s
    (folder / "run.json").write_text(json.dumps({  # a run from before sessions were kept
        "status": "completed", "start": "2026-01-01T10:00:00+0000",
        "end": "2026-01-01T10:01:00+0000"}))
    assert view_run(Run(folder)).duration() == 60.0


def test_runs_of_different_configs_name_their_figures_in_each_cell(work: Path):
    runs = work / "runs"
    other = clone(next((runs / "tiny_mlp").iterdir()), "mixed", "20200101-150000")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["monitor"], metrics["test"] = "val_mae", {"loss": 0.5, "mae": 0.25}
    (other / "metrics.json").write_text(json.dumps(metrics))
    try:
        out = nntrain("runs", cwd=work).output
    finally:
        shutil.rmtree(runs / "mixed")
    assert "best (epoch)" in out
    assert f"val_mae {metrics['best_value']:.4f}" in line_of(out, "mixed/")
    assert "loss 0.5000  mae 0.2500" in line_of(out, "mixed/")


def test_messages_name_what_is_wrong_with_a_folder(work: Path, tmp_path: Path):
    lr_find = nntrain("lr-find", str(TINY), "--steps", "20", cwd=work)
    assert lr_find.exit_code in (0, 2), lr_find.output
    (found,) = (work / "runs" / "tiny_mlp-lr-find").iterdir()
    try:
        shown = nntrain("runs", "show", str(found), cwd=work)
        assert shown.exit_code == 2
        assert "is a learning-rate range test (nntrain lr-find), not a training run" \
            in " ".join(shown.output.split())
    finally:
        shutil.rmtree(found.parent)
    cut = clone(next((work / "runs" / "tiny_mlp").iterdir()), "cut", "20200101-160000")
    try:
        (cut / "history.csv").write_text("epoch,loss,acc")  # cut short in its header
        plotted = nntrain("plot", str(cut), "-o", str(tmp_path / "p.png"), cwd=work)
        assert plotted.exit_code == 2
        assert "holds no epochs, though the run finished some" in " ".join(plotted.output.split())
        (cut / "metrics.json").write_text('{"best": ')
        evaluated = nntrain("evaluate", str(cut), cwd=work)
        assert evaluated.exit_code == 2
        assert "restore metrics.json from a copy of the run" in " ".join(evaluated.output.split())
    finally:
        shutil.rmtree(cut.parent)
    (tmp_path / "afile").write_text("")
    schema = nntrain("schema", "-o", str(tmp_path / "afile" / "x.json"), cwd=tmp_path)
    assert schema.exit_code == 2 and "is a file, where a folder is needed" in schema.output


def test_plot_leaves_out_runs_without_the_figure_asked_for(work: Path, tmp_path: Path):
    other = clone(next((work / "runs" / "tiny_mlp").iterdir()), "regress", "20200101-170000")
    try:
        rows = list(csv.DictReader((other / "history.csv").open()))
        with (other / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, [*rows[0], "mae"])
            writer.writeheader()
            writer.writerows({**row, "mae": 0.5} for row in rows)
        result = nntrain("plot", "tiny_mlp", "regress", "--metric", "mae",
                         "-o", str(tmp_path / "mae.png"), cwd=work)
    finally:
        shutil.rmtree(other.parent)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "mae for 1 run: regress/20200101-170000" in said
    assert "left out (without mae): tiny_mlp/" in said


def test_runs_lists_runs_whose_files_hold_odd_values(work: Path):
    """Damaged or hand-edited files are listed, never a traceback: a monitor that is a list,
    a figure name that looks like markup, a start in year 1, figures in another order."""
    first = next((work / "runs" / "tiny_mlp").iterdir())
    odd = [clone(first, "odd", f"20200101-18000{i}") for i in range(3)]
    for run, change in zip(odd, ({"monitor": ["val_loss"]},
                                 {"test": {"accuracy": 0.5, "loss": 1.0}},
                                 {"test": {"loss[/]": 1.0}}), strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, **change}))
    record = json.loads((odd[0] / "run.json").read_text())
    (odd[0] / "run.json").write_text(json.dumps({**record, "start": "0001-01-01T00:00:00+01:00"}))
    try:
        result = nntrain("runs", "odd", cwd=work)
    finally:
        shutil.rmtree(work / "runs" / "odd")
    assert result.exit_code == 0, result.output
    assert "loss[/] 1.0000" in result.output  # mixed figures: named in each cell


def test_test_columns_do_not_depend_on_the_order_of_the_figures(work: Path):
    first = next((work / "runs" / "tiny_mlp").iterdir())
    other = clone(first, "order", "20200101-190000")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["test"] = dict(reversed(list(metrics["test"].items())))  # accuracy first
    (other / "metrics.json").write_text(json.dumps(metrics))
    try:
        out = nntrain("runs", cwd=work).output
    finally:
        shutil.rmtree(other.parent)
    assert "test accuracy" in out and "loss 0." not in out


@pytest.mark.parametrize("config", [
    "name: x\na: " + "[" * 20000 + "]" * 20000,  # deeper than the YAML parser's recursion
    "name: x\n" + "\n".join(  # a billion laughs: nine levels of ten aliases
        [f"a: &a [{', '.join(['x'] * 10)}]"]
        + [f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]"
           for a, b in zip("abcdefgh", "bcdefghi", strict=True)]),
], ids=["deep", "alias_bomb"])
def test_a_hostile_config_in_a_run_leaves_the_listing_usable(work: Path, tmp_path: Path,
                                                             config: str):
    runs = tmp_path / "runs"
    shutil.copytree(work / "runs" / "tiny_mlp", runs / "tiny_mlp")
    (first,) = (runs / "tiny_mlp").iterdir()
    hostile = clone(first, "tiny_mlp", "20200101-100000")
    (hostile / "config.yaml").write_text(config)
    for args in (["runs"], ["runs", "tiny_mlp"], ["runs", "show", str(hostile)],
                 ["runs", "compare", str(first), str(hostile)]):
        result = nntrain(*args, "--runs-dir", str(runs), cwd=tmp_path)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output


def test_a_mistyped_runs_command_is_named_not_listed_as_a_run(tmp_path: Path):
    result = nntrain("runs", "shwo", "some_run", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown command 'runs shwo'; did you mean 'runs show'?" in result.output
    listed = nntrain("runs", "shows", "--runs-dir", str(tmp_path))  # a name: listed
    assert "unknown command" not in listed.output


def test_a_runs_dir_that_is_a_file_is_named_as_such(tmp_path: Path):
    (tmp_path / "notes").write_text("not runs\n")
    for args in (["plot", "xor"], ["evaluate", "latest"], ["predict", "some_run"]):
        result = nntrain(*args, "--runs-dir", str(tmp_path / "notes"), cwd=tmp_path)
        assert result.exit_code == 2, result.output
        assert "is a file, not a folder of runs" in " ".join(result.output.split())
