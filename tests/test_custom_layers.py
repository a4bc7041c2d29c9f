"""User-defined layers (`module:Class`): loaded from the config's folder, trained like built-in
ones, and never imported from a run directory without --trust-code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clirunner import nntrain

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_layer"




@pytest.fixture()
def example(tmp_path: Path) -> Path:
    """The documented example, copied with a module that leaves a mark when imported."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    module = folder / "my_layers.py"
    module.write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['IMPORT_MARK']).write_text('imported')\n"
        + module.read_text())
    return folder


def test_example_trains_and_reads_back_only_with_trust(example: Path, tmp_path, monkeypatch):
    mark = tmp_path / "mark"
    monkeypatch.setenv("IMPORT_MARK", str(mark))
    summary = nntrain("summary", str(example / "gated.yaml"), cwd=tmp_path)
    assert summary.exit_code == 0, summary.output
    assert "gated (Gated)" in summary.output and "1,088" in summary.output  # 2 x (16*32 + 32)

    result = nntrain("fit", str(example / "gated.yaml"), "--epochs", "3", "-q", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("runs/gated/*"))
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.5

    import sys
    sys.modules.pop("my_layers", None)
    mark.unlink()
    refused = nntrain("predict", str(run), "--split", "test", "--limit", "2", cwd=tmp_path)
    assert refused.exit_code == 2
    assert "--trust-code" in refused.output and "my_layers:Gated" in refused.output
    assert not mark.exists(), "the module was imported without --trust-code"

    trusted = nntrain("predict", str(run), "--split", "test", "--limit", "2", "--trust-code",
                      cwd=tmp_path)
    assert trusted.exit_code == 0, trusted.output
    assert mark.exists()
    sys.modules.pop("my_layers", None)


def test_custom_layer_errors(example: Path, tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("IMPORT_MARK", str(tmp_path / "mark"))
    config = example / "gated.yaml"
    text = config.read_text()

    config.write_text(text.replace("my_layers:Gated", "no_such_module:Gated"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2 and "cannot import 'no_such_module'" in result.output

    config.write_text(text.replace("my_layers:Gated", "my_layers:Nope"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2 and "has no class 'Nope'" in result.output

    config.write_text(text.replace("my_layers:Gated", "my_layers:Gate"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "gated.yaml:" in said and "model.layers[" in said  # the place
    assert "has no class 'Gate' (did you mean 'my_layers:Gated'?)" in said
    # what the module imported (jnp, Layer) is never offered
    config.write_text(text.replace("my_layers:Gated", "my_layers:Layr"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2 and "has no class 'Layr'" in result.output
    assert "did you mean" not in result.output

    config.write_text(text.replace("units: 32", "units: -3"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2 and "units" in result.output and "gated.yaml:" in result.output

    config.write_text(text.replace("my_layers:Gated", "os:getcwd"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2 and "is not a layer" in result.output

    # nntrain applies the activation of a Layer subclass: its name is checked as a dense's
    config.write_text(text.replace("activation: relu}", "activation: relux}"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "my_layers:Gated.activation: unknown activation 'relux'" in result.output
    assert "did you mean 'relu'" in result.output
    # a layer that applies its activation itself names what it likes
    (example / "own.py").write_text(
        "import jax.numpy as jnp\nfrom my_layers import Gated\n\n\n"
        "class Mish(Gated):\n"
        "    @property\n    def activation(self):\n        return None\n\n"
        "    def call(self, params, state, x, **kwargs):\n"
        "        y, state = super().call(params, state, x, **kwargs)\n"
        "        return y * jnp.tanh(jnp.logaddexp(y, 0.0)), state\n")
    config.write_text(text.replace("my_layers:Gated: {units: 32, activation: relu}",
                                   "own:Mish: {units: 32, activation: mish}"))
    result = nntrain("validate", str(config), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    sys.modules.pop("own", None)
    sys.modules.pop("my_layers", None)


BROKEN_LAYERS = """
import jax.numpy as jnp


class RaisesInInit:
    def __init__(self, args):
        self.args = args

    def init(self, rng, input_shape):
        raise ValueError("init boom")

    def apply(self, params, state, x, *, training, rng):
        return x, state


class RaisesInApply(RaisesInInit):
    def init(self, rng, input_shape):
        return {}, {}, input_shape

    def apply(self, params, state, x, *, training, rng):
        raise RuntimeError("apply boom")


class WrongShape(RaisesInApply):
    def apply(self, params, state, x, *, training, rng):
        return jnp.concatenate([x, x], axis=-1), state
"""


@pytest.mark.parametrize(("layer", "message"), [
    ("RaisesInInit", "custom layer 'broken' (broken:RaisesInInit): init raised ValueError: "
                     "init boom"),
    ("RaisesInApply", "custom layer 'broken' (broken:RaisesInApply): apply raised "
                      "RuntimeError: apply boom"),
    ("WrongShape", "custom layer 'broken' (broken:WrongShape): apply returned examples of "
                   "shape (32,), its init said (16,)"),
])
def test_what_a_custom_layer_raises_is_reported_as_its_error(tmp_path: Path, layer, message):
    (tmp_path / "broken.py").write_text(BROKEN_LAYERS)
    config = tmp_path / "broken.yaml"
    config.write_text((EXAMPLE / "gated.yaml").read_text().replace(
        "- my_layers:Gated: {units: 32, activation: relu}", f"- broken:{layer}: {{name: broken}}"))
    result = nntrain("fit", str(config), "--epochs", "1", cwd=tmp_path)
    import sys
    sys.modules.pop("broken", None)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not list(tmp_path.glob("runs/*/*"))  # nothing half-made left behind
