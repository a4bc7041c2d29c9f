"""A checkpoint record changed after it was written, its digests recomputed (they prove the
files are as written, not that the writer was nntrain): `fit --resume` refuses it as a
damaged checkpoint, exit 2, instead of a traceback or a run that trains from epoch -4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirunner import nntrain

from nntrain import checkpoint

TINY = Path(__file__).resolve().parent / "configs" / "tiny_mlp.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("hostile") / "runs"
    callbacks = ("[{early_stopping: {monitor: val_loss, patience: 3}}, "
                 "{model_checkpoint: {monitor: val_loss, save_best_only: true}}, "
                 "{csv_logger: log.csv}]")
    result = nntrain("fit", str(TINY), "--epochs", "2", "-q", "--runs-dir", str(runs),
                     "--set", f"fit.callbacks={callbacks}")
    assert result.exit_code == 0, result.output
    (run,) = runs.glob("*/*")
    return run


def _rewrite(run: Path, change) -> None:
    path = run / "checkpoints" / "last" / checkpoint.META
    record = json.loads(path.read_text())
    change(record)
    record["meta_sha256"] = checkpoint._meta_digest(record)
    path.write_text(json.dumps(record))


CASES = {
    "no history": (lambda r: r.pop("history"), "its history is not 2 rows of figures"),
    "a word for the epoch": (lambda r: r.update(epoch="abc"), "epoch 'abc' is not a count"),
    "a negative epoch": (lambda r: r.update(epoch=-5), "epoch -5 is not a count"),
    "a history of words": (lambda r: r["history"][0].update(epoch="x"),
                           "its history is not 2 rows of figures"),
    "a step past the epoch": (lambda r: r.update(step_in_epoch=999, partial_sums=[1, 2]),
                              "stopped at step 999 of an epoch, and its epochs now have 16 "
                              "steps"),
    "partial sums of another size": (lambda r: r.update(step_in_epoch=3, partial_sums=[1, 2]),
                                     "partial_sums is not"),
    "a callback state of words": (lambda r: r["callbacks"][0].update(best="x"),
                                  "the state of EarlyStopping is damaged (best is 'x', not a "
                                  "number)"),
    "a csv_logger's count of words": (lambda r: r["callbacks"][-1].update(lines="x"),
                                      "the state of CSVLogger is damaged (lines is 'x'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_rewritten_record_is_a_damaged_checkpoint(trained: Path, tmp_path: Path, case: str):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    change, message = CASES[case]
    _rewrite(run, change)
    history = (run / "history.csv").read_text()
    result = nntrain("fit", "--resume", str(run), "--epochs", "3", "-q")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert (run / "history.csv").read_text() == history
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
