"""Sample weights per output (`data.sample_weight: {output: column}`, Keras's sample_weight
dict): each output's loss and weighted metrics take its own weights, an output left out is
unweighted, and every way in (CSV, .npz, streamed .npy files, a generator) trains alike."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from clirunner import nntrain
from runfiles import history_rows

from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.data.sources import load_dataset
from nntrain.errors import DataError
from nntrain.train.programs import Programs, to_device

N = 96
CONFIG = """
name: weighted
seed: 3
data:
%s
model:
  input: [3]
  layers:
    - dense: {units: 8, activation: relu}
    - dense: {units: 1, name: out_a, inputs: dense}
    - dense: {units: 1, name: out_b, inputs: dense}
  outputs: [out_a, out_b]
compile:
  loss: mse
  optimizer: {sgd: 0.05}
  weighted_metrics: [mae]
fit:
  epochs: 3
  batch_size: 16
  shuffle: false
"""

GENERATOR = '''
from pathlib import Path

import numpy as np

D = np.load(Path(__file__).with_name("d.npz"))


def train():
    for i in range(0, len(D["input"]), 16):
        rows = slice(i, i + 16)
        yield ({"input": D["input"][rows]}, {"out_a": D["out_a"][rows], "out_b": D["out_b"][rows]},
               {"out_a": D["wa"][rows]})


def batches(split, epoch):
    return train() if split == "train" else None
'''


def _data(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 3)).astype(np.float32)
    arrays = {"input": x, "out_a": (x @ [1.0, 2.0, 3.0]).astype(np.float32)[:, None],
              "out_b": (x @ [-1.0, 0.0, 1.0]).astype(np.float32)[:, None],
              "wa": (rng.random(N) > 0.5).astype(np.float32) * 3,
              "wb": np.full(N, 0.5, np.float32)}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "d.npz", **arrays)
    return arrays


def _write_csv(path: Path, arrays: dict[str, np.ndarray], columns: list[str]) -> None:
    flat = {"x0": arrays["input"][:, 0], "x1": arrays["input"][:, 1],
            "x2": arrays["input"][:, 2], "a": arrays["out_a"][:, 0], "b": arrays["out_b"][:, 0],
            "wa": arrays["wa"], "wb": arrays["wb"]}
    lines = [",".join(columns)] + [",".join(repr(float(flat[c][i])) for c in columns)
                                   for i in range(len(arrays["input"]))]
    path.write_text("\n".join(lines) + "\n")


def _config(folder: Path, data: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(CONFIG % textwrap.indent(textwrap.dedent(data).strip(), "  "))
    return path


def _fit(config: Path, runs: Path, *extra: str) -> Path:
    result = nntrain("fit", str(config), "-q", "--runs-dir", str(runs), *extra,
                     cwd=config.parent)
    assert result.exit_code == 0, result.output
    (run,) = runs.glob("*/*")
    return run


def test_each_output_is_weighted_by_its_own_array(tmp_path: Path):
    arrays = _data(tmp_path)
    loaded = load_config(_config(tmp_path, "train: d.npz\nsample_weight: {out_a: wa}\n"))
    setup = prepare(loaded)
    ds = load_dataset(loaded.config.data, setup.io, tmp_path, loaded.config.seed)
    assert ds.train.sample_weight is None and list(ds.train.output_weights) == ["out_a"]
    params, state = setup.model.init(jax.random.key(0))
    outputs, _, _ = setup.model.apply(params, state, {"input": arrays["input"]})
    err_a = (np.asarray(outputs["out_a"], np.float64) - arrays["out_a"])[:, 0]
    err_b = (np.asarray(outputs["out_b"], np.float64) - arrays["out_b"])[:, 0]
    programs = Programs(setup, batch_size=16, eval_batch_size=16, steps_per_call=1)
    figures = programs.evaluate(params, state, to_device(ds.train), N)
    # Keras's sum_over_batch_size: weighted squared errors over all examples; out_b unweighted
    expected_a = float((arrays["wa"] * err_a**2).mean())
    assert figures["out_a_loss"] == pytest.approx(expected_a, rel=1e-5)
    assert figures["out_a_loss"] != pytest.approx(float((err_a**2).mean()), rel=1e-2)
    assert figures["out_b_loss"] == pytest.approx(float((err_b**2).mean()), rel=1e-5)
    assert figures["loss"] == pytest.approx(figures["out_a_loss"] + figures["out_b_loss"])
    # weighted_metrics take the output's own weights: sum(w |e|) / sum(w)
    wa = arrays["wa"]
    assert figures["out_a_mae"] == pytest.approx(float((wa * abs(err_a)).sum() / wa.sum()),
                                                 rel=1e-5)
    assert figures["out_b_mae"] == pytest.approx(float(abs(err_b).mean()), rel=1e-5)


def test_csv_npz_streamed_files_and_a_generator_train_alike(tmp_path: Path):
    arrays = _data(tmp_path)
    _write_csv(tmp_path / "t.csv", arrays, ["x0", "x1", "x2", "a", "b", "wa", "wb"])
    (tmp_path / "arrays").mkdir()
    for name, array in arrays.items():
        np.save(tmp_path / "arrays" / f"{name}.npy", array)
    (tmp_path / "gen.py").write_text(GENERATOR)
    configs = {
        "npz": "train: d.npz\nsample_weight: {out_a: wa}",
        "csv": "train: t.csv\ntargets: [a, b]\noutputs: {out_a: a, out_b: b}\n"
               "features: [x0, x1, x2]\nsample_weight: {out_a: wa}",
        "npy": "train: arrays\nsample_weight: {out_a: wa}\ndevice_memory: 2kB",
        "generator": "generator: gen:batches",
        "unweighted": "train: d.npz",
    }
    histories = {}
    for name, data in configs.items():
        run = _fit(_config(tmp_path, data, f"{name}.yaml"), tmp_path / name)
        histories[name] = history_rows(run)
    assert len(histories["npz"]) == 3
    for name in ("csv", "npy", "generator"):
        for mine, theirs in zip(histories[name], histories["npz"], strict=True):
            for key in ("loss", "out_a_loss", "out_b_loss", "out_a_mae"):
                assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-5), name
    assert histories["unweighted"][0]["out_a_loss"] != histories["npz"][0]["out_a_loss"]


def test_a_held_out_file_without_an_outputs_weights_leaves_that_output_unweighted(
        tmp_path: Path):
    arrays = _data(tmp_path)
    _write_csv(tmp_path / "t.csv", arrays, ["x0", "x1", "x2", "a", "b", "wa", "wb"])
    _write_csv(tmp_path / "test.csv", arrays, ["x0", "x1", "x2", "a", "b", "wb"])
    np.savez(tmp_path / "test.npz", **{k: v[:20] for k, v in arrays.items() if k != "wa"})
    for train, test in (("t.csv", "test.csv"), ("d.npz", "test.npz")):
        extra = "targets: [a, b]\noutputs: {out_a: a, out_b: b}\n" if train == "t.csv" else ""
        loaded = load_config(_config(tmp_path, f"train: {train}\n{extra}test: {{path: {test}}}\n"
                                                "sample_weight: {out_a: wa, out_b: wb}\n"))
        setup = prepare(loaded)
        ds = load_dataset(loaded.config.data, setup.io, tmp_path, loaded.config.seed)
        assert sorted(ds.train.output_weights) == ["out_a", "out_b"]
        assert list(ds.test.output_weights) == ["out_b"], test
    run = _fit(tmp_path / "config.yaml", tmp_path / "runs")
    assert "test" in json.loads((run / "metrics.json").read_text())


def test_a_weight_for_an_unknown_output_is_a_config_error(tmp_path: Path):
    _data(tmp_path)
    config = _config(tmp_path, "train: d.npz\nsample_weight: {out_c: wa}\n")
    result = nntrain("validate", str(config))
    assert result.exit_code == 2
    assert "data.sample_weight.out_c" in result.output
    assert "'out_c' is not an output of the model (outputs: out_a, out_b)" in result.output
    assert "Traceback" not in result.output


def test_a_missing_weight_array_names_the_output(tmp_path: Path):
    _data(tmp_path)
    loaded = load_config(_config(tmp_path, "train: d.npz\nsample_weight: {out_b: wz}\n"))
    setup = prepare(loaded)
    with pytest.raises(DataError) as info:
        load_dataset(loaded.config.data, setup.io, tmp_path, loaded.config.seed)
    assert "no array named 'wz' (data.sample_weight.out_b)" in str(info.value)
    assert "out_b" in info.value.hint and "wa" in info.value.hint


def test_a_generator_weighting_an_unknown_output_is_a_data_error(tmp_path: Path):
    _data(tmp_path)
    # a module name of its own: the CLI runs in this process, which has imported `gen`
    (tmp_path / "gen_z.py").write_text(GENERATOR.replace('{"out_a": D["wa"][rows]}',
                                                         '{"out_z": D["wa"][rows]}'))
    config = _config(tmp_path, "generator: gen_z:batches")
    result = nntrain("fit", str(config), "-q", "--runs-dir", str(tmp_path / "runs"),
                     cwd=tmp_path)
    assert result.exit_code == 2
    assert "sample weights for out_z, not an output of the model" in result.output
    assert "out_a, out_b" in result.output
