"""`nntrain predict RUN --show N`: a grid of images with predicted and true classes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from clirunner import nntrain

IMAGES = """\
name: tiny_images
seed: 5
data:
  dataset: synthetic
  synthetic: {samples: 200, test_samples: 40, classes: 3, integer_inputs: true}
model:
  input: [8, 8]
  layers:
    - rescaling: 1/255
    - flatten
    - dense: {units: 3, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
  optimizer: adam
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 32
"""




def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def fitted(work: Path, text: str) -> Path:
    (work / "config.yaml").write_text(text)
    result = nntrain("fit", "config.yaml", "-q", cwd=work)
    assert result.exit_code == 0, result.output
    (run,) = [p.parent for p in work.glob("runs/*/*/run.json")]
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return fitted(tmp_path_factory.mktemp("show"), IMAGES)


def test_show_writes_a_grid_into_the_runs_predictions_folder(image_run: Path):
    result = nntrain("predict", str(image_run), "--split", "test", "--show", "12",
                     cwd=image_run.parents[2])
    assert result.exit_code == 0, result.output
    path = image_run / "predictions" / "show.png"
    assert "wrote 12 images" in result.output and "wrong" in result.output
    width, height = png_size(path)
    assert 1000 <= width <= 2000 and 300 <= height <= 600  # 10 columns, 2 rows


def test_show_to_a_given_file_and_fewer_images(image_run: Path, tmp_path: Path):
    out = tmp_path / "grid.png"
    result = nntrain("predict", str(image_run), "--show", "3", "--output", str(out),
                     cwd=tmp_path)
    assert result.exit_code == 0, result.output
    width, height = png_size(out)
    assert 300 <= width <= 600 and 150 <= height <= 300  # one row of 3


def test_show_refuses_models_that_do_not_take_images(tmp_path: Path):
    text = IMAGES.replace("input: [8, 8]", "input: [6]").replace(
        "    - rescaling: 1/255\n    - flatten\n", "")
    run = fitted(tmp_path, text)
    result = nntrain("predict", str(run), "--show", "4", cwd=tmp_path)
    assert result.exit_code == 2
    assert "not an image" in result.output and "(6,)" in result.output
    assert "Traceback" not in result.output
    assert not (run / "predictions").exists()


def test_show_rejects_a_non_image_output_name(image_run: Path, tmp_path: Path):
    result = nntrain("predict", str(image_run), "--show", "4", "--output",
                     str(tmp_path / "x.csv"), cwd=tmp_path)
    assert result.exit_code == 2 and "draws an image" in result.output
    ranked = nntrain("predict", str(image_run), "--show", "4", "--top", "3", cwd=tmp_path)
    assert ranked.exit_code == 2, ranked.output
    assert "--top 3 ranks classes in the table; --show draws each image" in ranked.output


def test_images_scaled_already_are_warned_about(image_run: Path, tmp_path: Path):
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8))
    np.save(tmp_path / "raw.npy", pixels.astype(np.uint8))
    np.save(tmp_path / "scaled.npy", (pixels / 255).astype(np.float32))
    raw = nntrain("predict", str(image_run), str(tmp_path / "raw.npy"))
    assert raw.exit_code == 0 and "warning" not in raw.output
    scaled = nntrain("predict", str(image_run), str(tmp_path / "scaled.npy"))
    assert scaled.exit_code == 0, scaled.output
    assert "warning: input 'input' holds values in [0, 1], and the layer that takes it, " \
        "'rescaling', multiplies them by 0.003922" in " ".join(scaled.output.split())
