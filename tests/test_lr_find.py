"""`nntrain lr-find`: the learning-rate range test on a tiny synthetic config."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
from clirunner import nntrain

from nntrain.lr_find import LRFindResult, centred, rate_at, smooth, suggest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_mlp.yaml"




def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def the_run(work: Path, name: str = "tiny_mlp-lr-find") -> Path:
    found = sorted((work / "runs" / name).iterdir())
    assert len(found) == 1, found
    return found[0]


def read_rows(run: Path) -> list[dict[str, float]]:
    with (run / "lr_find.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["step", "learning_rate", "loss", "smoothed_loss"]
    return [{k: float(v) for k, v in row.items()} for row in rows]


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("lr")
    before = TINY.read_bytes(), TINY.stat().st_mtime_ns
    result = nntrain("lr-find", str(TINY), "--steps", "200", cwd=work)
    assert result.exit_code == 0, result.output
    assert (TINY.read_bytes(), TINY.stat().st_mtime_ns) == before  # the config is only read
    return the_run(work), result.output


def test_lr_find_writes_csv_png_and_a_suggestion_in_range(found):
    run, output = found
    for name in ("lr_find.csv", "lr_find.png", "lr_find.json", "config.yaml"):
        assert (run / name).exists(), name
    assert not (run / "run.json").exists()  # not a training run: `latest` never picks it
    width, height = png_size(run / "lr_find.png")
    assert width >= 400 and height >= 300
    summary = json.loads((run / "lr_find.json").read_text())
    assert 1e-5 <= summary["suggestion"] <= 10
    assert f"suggested learning rate: {summary['suggestion']:.3g}" in output
    rows = read_rows(run)
    assert summary["steps_done"] == len(rows) <= 200
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["smoothed_loss"]) for r in rows)
    rates = [r["learning_rate"] for r in rows]
    assert rates[0] == pytest.approx(1e-5)
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False))  # grows every step
    # the tiny model learns at moderate rates and diverges before 10: a dip, then a stop
    assert len(rows) < 200 and "exceeded" in summary["stop_reason"]
    lowest = min(r["smoothed_loss"] for r in rows)
    assert lowest < 0.8 * rows[0]["smoothed_loss"]
    assert summary["suggestion"] == pytest.approx(summary["learning_rate_at_lowest"] / 10,
                                                  rel=1e-6)


def test_a_schedule_in_the_config_is_replaced_by_the_ramp(tmp_path: Path):
    text = TINY.read_text().replace(
        "optimizer: {adam: {learning_rate: 0.01}}",
        "optimizer: {sgd: {learning_rate: {exponential_decay: "
        "{initial_learning_rate: 0.1, decay_steps: 5, decay_rate: 0.5}}}}")
    assert "exponential_decay" in text
    config = tmp_path / "scheduled.yaml"
    config.write_text(text)
    result = nntrain("lr-find", str(config), "--steps", "40", "--min-lr", "1e-3",
                     "--max-lr", "1", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    rows = read_rows(the_run(tmp_path))
    for i, row in enumerate(rows):
        assert row["learning_rate"] == pytest.approx(rate_at(i, 40, 1e-3, 1.0), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (("--min-lr", "1", "--max-lr", "1"), "greater than --min-lr"),
    (("--min-lr", "0.5", "--max-lr", "0.1"), "greater than --min-lr"),
    (("--min-lr", "0"), "positive"),
    (("--min-lr", "-1"), "positive"),
    (("--steps", "3"), "at least 10"),
    (("--max-lr", "inf"), "--max-lr inf: give a finite learning rate"),
    (("--max-lr", "1e308"), "--max-lr 1e+308: give at most 1e6"),
])
def test_bad_arguments_exit_2_without_touching_the_disk(tmp_path: Path, args, message):
    result = nntrain("lr-find", str(TINY), *args, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_missing_config_exits_2(tmp_path: Path):
    result = nntrain("lr-find", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_ramp_smoothing_and_suggestion_rules():
    assert rate_at(0, 100, 1e-4, 1.0) == pytest.approx(1e-4)
    assert rate_at(99, 100, 1e-4, 1.0) == pytest.approx(1.0)
    assert rate_at(33, 100, 1e-4, 1e-1) == pytest.approx(1e-3)
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected
    rates = [rate_at(i, 50, 1e-4, 1.0) for i in range(50)]
    losses = [abs(i - 30) / 10 + 1 for i in range(50)]  # lowest at step 30
    result = LRFindResult(rates, losses, losses)
    suggest(result, 1e-4, 1.0)
    assert result.best_index == 30
    assert result.suggestion == pytest.approx(rates[30] / 10)
    # the curve searched for its lowest point does not lag: a moving average's minimum
    # comes later, at rates where the loss already climbs
    valley = [abs(i - 60) / 10 + 1 for i in range(100)]
    assert int(np.argmin(centred(valley))) == 60
    assert int(np.argmin(smooth(valley))) > 70
    rising = [1 + i / 10 for i in range(50)]  # lowest at the very start: no rate is low enough
    early = LRFindResult(rates, rising, rising)
    suggest(early, 1e-4, 1.0)
    assert early.suggestion is None
    assert any("only rose" in n and "lower --min-lr" in n for n in early.notes)
    # a valley just after the start: the suggestion is kept within the range, with a note
    soon = [abs(i - 7) / 10 + 1 for i in range(50)]
    low = LRFindResult(rates, soon, soon)
    suggest(low, 1e-4, 1.0)
    assert low.suggestion == 1e-4 and any("lower --min-lr" in n for n in low.notes)


def test_a_loss_below_zero_diverges_only_when_it_climbs_back():
    """cosine_similarity falls from about 0 towards -1: never 4x its (negative) lowest."""
    from nntrain.lr_find import _diverged

    assert not _diverged(-0.5, best=-0.9, first=-0.1)
    assert _diverged(0.75, best=-0.9, first=-0.1)  # above -0.1 + 0.8
    assert not _diverged(3.9, best=1.0, first=2.3) and _diverged(4.1, best=1.0, first=2.3)


def test_a_loss_that_does_not_fall_gets_no_suggestion(tmp_path: Path):
    rates = [rate_at(i, 50, 1e-4, 1.0) for i in range(50)]
    flat = [0.6932 - i * 1e-6 for i in range(40)] + [0.7 + i for i in range(10)]  # XOR's
    result = LRFindResult(rates, flat, flat)
    suggest(result, 1e-4, 1.0)
    assert result.suggestion is None and "hardly fell" in result.notes[0]
    # end to end: XOR's loss stays at ln 2 for a few hundred steps at any rate
    out = nntrain("lr-find", str(ROOT / "configs" / "xor.yaml"), cwd=tmp_path)
    assert out.exit_code == 2
    assert "no learning rate to suggest: the smoothed loss hardly fell" in out.output
    assert out.output.count("hardly fell") == 1
    (found,) = (tmp_path / "runs" / "xor-lr-find").iterdir()  # the curve, to look at
    assert json.loads((found / "lr_find.json").read_text())["suggestion"] is None


def test_an_interrupted_test_leaves_no_half_made_folder(tmp_path: Path, monkeypatch):
    from nntrain import lr_find

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lr_find, "run_range_test", interrupted)
    result = nntrain("lr-find", str(TINY), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "runs" / "tiny_mlp-lr-find").exists()


def test_a_terminated_test_leaves_no_half_made_folder(tmp_path: Path, monkeypatch):
    """SIGTERM (a timeout, a scheduler) cleans up as Ctrl-C does, and exits 143."""
    from nntrain import lr_find

    def terminated(*args, on_step, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # noted by the handler, acted on after the step
        on_step(1, 1e-5, 1.0)
        raise AssertionError("the step after a SIGTERM ran")

    monkeypatch.setattr(lr_find, "run_range_test", terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = nntrain("lr-find", str(TINY), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 143, result.output
    assert not (tmp_path / "runs" / "tiny_mlp-lr-find").exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_with_gradient_accumulation_a_step_is_one_update_of_several_batches(tmp_path: Path):
    """Two accumulated batches of 16 make the same steps as one batch of 32: the same
    gradient, and a loss that is the mean of the two (taken with the same weights)."""
    for name, batch_size, every in (("big", 32, "null"), ("small", 16, "2")):
        text = TINY.read_text().replace("name: tiny_mlp", f"name: {name}").replace(
            "    - dropout: 0.1\n", "").replace(
            "optimizer: {adam: {learning_rate: 0.01}}",
            f"optimizer: {{adam: {{gradient_accumulation_steps: {every}}}}}").replace(
            "batch_size: 32", f"batch_size: {batch_size}\n  shuffle: false")
        config = tmp_path / f"{name}.yaml"
        config.write_text(text)
        result = nntrain("lr-find", str(config), "--steps", "12", "--max-lr", "0.1",
                         cwd=tmp_path)
        assert result.exit_code in (0, 2), result.output  # 12 steps may suggest nothing
    big, small = (read_rows(the_run(tmp_path, f"{n}-lr-find")) for n in ("big", "small"))
    assert len(small) == len(big) == 12
    np.testing.assert_allclose([r["loss"] for r in small], [r["loss"] for r in big],
                               rtol=1e-5)
    assert len({r["loss"] for r in small}) == 12  # a new loss every step


def test_a_ctrl_c_while_it_sets_up_is_acted_on_not_lost(tmp_path: Path, monkeypatch):
    """Raised at once, a KeyboardInterrupt can land in a garbage-collector callback that
    swallows it (JAX's import runs some): noted, it stops the command before the test."""
    from nntrain import commands

    configure = commands.configure_jax

    def interrupted_while_configuring():
        os.kill(os.getpid(), signal.SIGINT)
        configure()

    monkeypatch.setattr(commands, "configure_jax", interrupted_while_configuring)
    result = nntrain("lr-find", str(TINY), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "runs").exists()
