"""`nntrain fit --log-format json`: stdout is JSON lines only, one per epoch, then an end
object; people's messages go to stderr. Run as a real process, so stray prints would show."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from nntrain.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "nntrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_json_log_format_prints_only_json_lines(tmp_path: Path):
    done = run_cli("fit", str(TINY), "--epochs", "3", "--log-format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # every stdout line parses
    epochs, end = records[:-1], records[-1]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for record in epochs:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                "seconds"} <= set(record)
        assert all(isinstance(v, (int, float)) for v in record.values())
    assert end["event"] == "end" and end["status"] == "completed"
    assert end["epochs"] == 3 and 1 <= end["best_epoch"] <= 3
    assert set(end["test"]) == {"loss", "accuracy"}
    run = tmp_path / end["run"]
    assert (run / "run.json").exists()
    # each epoch's line holds its history.csv row's figures (the rate 0.01, not 0.00999999977)
    with (run / "history.csv").open() as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert epochs == rows and epochs[0]["learning_rate"] == 0.01
    # the end event's best value is the best epoch's figure as its line gave it
    assert end["best_value"] == epochs[end["best_epoch"] - 1][end["monitor"]]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    # `python -m nntrain` recorded as typed, not as nntrain/__main__.py
    assert info["command"] == [Path(sys.executable).name, "-m", "nntrain", "fit", str(TINY),
                               "--epochs", "3", "--log-format", "json"]
    assert "Training tiny_mlp" in done.stderr  # the people's messages went to stderr


def test_json_log_format_with_quiet_keeps_the_json(tmp_path: Path):
    result = CliRunner().invoke(app, ["fit", str(TINY), "--epochs", "2", "--log-format",
                                      "json", "-q", "--runs-dir", str(tmp_path / "runs")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("epoch") for r in records] == [1, 2, None]
    assert records[-1]["event"] == "end"
    assert result.stderr == ""


def test_rich_is_the_default_and_a_bad_format_exits_2(tmp_path: Path):
    runner = CliRunner()
    rich = runner.invoke(app, ["fit", str(TINY), "--epochs", "1", "--runs-dir",
                               str(tmp_path / "runs")], catch_exceptions=False)
    assert rich.exit_code == 0, rich.output
    assert "Epoch 1/1" in rich.stdout and not rich.stdout.lstrip().startswith("{")
    bad = runner.invoke(app, ["fit", str(TINY), "--log-format", "xml"])
    assert bad.exit_code == 2
    assert "--log-format" in bad.output and "json" in bad.output


def test_a_config_error_in_json_mode_is_one_error_object_on_stdout(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY.read_text().replace("units: 16", "unit: 16"))
    done = run_cli("fit", str(config), "--log-format", "json", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stdout.splitlines()  # no epoch ran: no run, no end object; only why
    error = json.loads(line)
    assert error["event"] == "error" and error["exit_code"] == 2
    assert "unknown key 'unit'" in error["message"] and error["hint"]
    assert "did you mean 'units'" in done.stderr and "Traceback" not in done.stderr
    usage = run_cli("fit", str(TINY), "--log-format", "json", "--devices", "two", cwd=tmp_path)
    assert usage.returncode == 2
    assert "--devices 'two'" in json.loads(usage.stdout)["message"]


def test_an_option_the_parser_refuses_is_a_json_error_too(tmp_path: Path):
    """Options typer refuses before `fit` runs (a range, a misspelt name) still end with the
    error object a program reading stdout waits for; without json, stdout stays empty."""
    for args, says in ((["--epochs", "-3"], "Invalid value for '--epochs'"),
                       (["--epoch", "2"], "No such option: --epoch"),
                       (["--batch-size=x"], "Invalid value for '--batch-size'")):
        for form in (["--log-format", "json"], ["--log-format=json"]):
            done = run_cli("fit", str(TINY), *form, *args, cwd=tmp_path)
            assert done.returncode == 2
            (line,) = done.stdout.splitlines()
            error = json.loads(line)
            assert error["event"] == "error" and error["exit_code"] == 2
            assert says in error["message"] and "nntrain fit --help" in error["hint"]
            assert says in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
    plain = run_cli("fit", str(TINY), "--epochs", "-3", cwd=tmp_path)
    assert plain.returncode == 2 and plain.stdout == ""
    assert not (tmp_path / "runs").exists()
