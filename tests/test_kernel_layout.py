"""Dense kernels held transposed inside a CPU training chunk (nntrain/train/kernel_layout.py):
the same training as with Keras's layout, and Keras's layout outside the chunk."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.data.sources import load_dataset
from nntrain.train.devices import Placement
from nntrain.train.kernel_layout import KernelLayout
from nntrain.train.programs import Programs, epoch_order, initialize, to_device

N, BATCH, STEPS = 40, 8, 5


def setup_for(tmp_path: Path, optimizer: str, dense_extra: str = "",
              middle: str = "dense: {units: 5, activation: tanh}"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        name: t
        data: {{train: d.npz}}
        model:
          input: [6]
          layers:
            - dense: {{units: 9, activation: relu{dense_extra}}}
            - {middle}
            - dense: {{units: 3, activation: softmax}}
        compile:
          loss: sparse_categorical_crossentropy
          optimizer: {optimizer}
          metrics: [accuracy]
        """))
    loaded = load_config(tmp_path / "config.yaml")
    setup = prepare(loaded)
    return setup, load_dataset(loaded.config.data, setup.io, tmp_path, 0)


def train(setup, ds, platform: str, rolled: bool = False):
    programs = Programs(setup, batch_size=BATCH, eval_batch_size=BATCH, steps_per_call=STEPS,
                        rolled=rolled)
    programs.kernels = KernelLayout(setup.model, setup.optimizer, platform, BATCH)
    _, params, state, opt_state = initialize(setup, 3)
    carry = {"params": params, "state": state, "opt_state": opt_state, "step": jnp.int32(0)}
    order = epoch_order(jax.random.key(1), 0, N, N, True)
    carry, sums, _ = programs.train_epoch(carry, to_device(ds.train), order, N,
                                          jax.random.key(2))
    return programs, carry, programs.layout.result(sums)


@pytest.mark.parametrize("optimizer", [
    "{sgd: {learning_rate: 0.1, momentum: 0.9, nesterov: true}}",
    "{adam: {learning_rate: 0.01, amsgrad: true}}",
    "{adamw: {learning_rate: 0.01, weight_decay: 0.1}}",
    "{nadam: 0.01}",
    "{rmsprop: {learning_rate: 0.01, centered: true, momentum: 0.5}}",
    "{adagrad: 0.1}",
    "{sgd: {learning_rate: 0.1, momentum: 0.5, clipnorm: 0.05, weight_decay: 0.01}}",
    "{adam: {learning_rate: 0.01, gradient_accumulation_steps: 2, global_clipnorm: 0.1}}",
    "{sgd: {learning_rate: {exponential_decay: {initial_learning_rate: 0.1, decay_steps: 2, "
    "decay_rate: 0.5}}, momentum: 0.9, clipvalue: 0.01}}",
])
def test_training_with_kernels_held_transposed_matches_keras_layout(tmp_path: Path,
                                                                   optimizer: str):
    setup, ds = setup_for(tmp_path, optimizer)
    held, carry, figures = train(setup, ds, "cpu")
    assert held.kernels.swapped == {"dense": "kernel", "dense_1": "kernel", "dense_2": "kernel"}
    _, reference, reference_figures = train(setup, ds, "gpu")  # XLA's own layouts
    assert figures == pytest.approx(reference_figures, rel=1e-5)
    # the chunk hands back Keras's (inputs, units) kernels, and the optimizer's copies too
    assert carry["params"]["dense"]["kernel"].shape == (6, 9)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(reference), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-6)
    initial = initialize(setup, 3)[1]["dense"]["kernel"]
    assert not np.allclose(carry["params"]["dense"]["kernel"], initial)  # it trained


def test_a_rolled_chunk_holds_the_kernels_as_an_unrolled_one_does(tmp_path: Path):
    """fit's rolled loop (MLPs) and unrolled steps (conv nets) both train as Keras's layout."""
    setup, ds = setup_for(tmp_path, "{sgd: {learning_rate: 0.1, momentum: 0.9}}")
    _, carry, figures = train(setup, ds, "cpu", rolled=True)
    _, reference, reference_figures = train(setup, ds, "gpu")
    assert figures == pytest.approx(reference_figures, rel=1e-5)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-6)


def test_a_kernel_constraint_keeps_keras_axes(tmp_path: Path):
    """max_norm's axis 0 is each unit's incoming weights in Keras's layout: a transposed
    kernel must not be constrained along its other axis."""
    setup, ds = setup_for(tmp_path, "{sgd: 0.5}", ", kernel_constraint: {max_norm: 0.3}")
    _, carry, _ = train(setup, ds, "cpu")
    _, reference, _ = train(setup, ds, "gpu")
    kernel = np.asarray(carry["params"]["dense"]["kernel"])
    np.testing.assert_allclose(kernel, reference["params"]["dense"]["kernel"], rtol=2e-5,
                               atol=2e-6)
    assert np.linalg.norm(kernel, axis=0).max() == pytest.approx(0.3, rel=1e-4)
    assert np.linalg.norm(kernel, axis=1).max() > 0.31  # the rows are not what was capped


def test_off_the_cpu_and_at_large_batches_keras_layout_stays(tmp_path: Path):
    setup, _ = setup_for(tmp_path, "{sgd: 0.1}")
    params = {"dense": {"kernel": jnp.ones((6, 9))}}
    for platform, rows in [("gpu", 32), ("tpu", 32), ("cpu", 256), ("cpu", 1024)]:
        layout = KernelLayout(setup.model, setup.optimizer, platform, rows)
        assert not layout.swapped
        assert layout.params(params) is params
    assert KernelLayout(setup.model, setup.optimizer, "cpu", 255).swapped
    # batch 256 over 4 CPU devices: 64 rows a device
    cpu = tuple(jax.devices("cpu"))
    assert Programs(setup, batch_size=256, eval_batch_size=256, steps_per_call=1,
                    placement=Placement(cpu * 4)).kernels.swapped
    assert not Programs(setup, batch_size=256, eval_batch_size=256, steps_per_call=1,
                        placement=Placement(cpu)).kernels.swapped


NESTED = '''
import jax
import jax.numpy as jnp
from pydantic import BaseModel, PositiveInt

from nntrain.layers import Layer


class Nested(Layer):
    """Params as a nested dict and a list: any pytree a user's layer may return."""

    class Args(BaseModel):
        units: PositiveInt
        activation: str | None = None
        name: str | None = None
        inputs: str | list[str] | None = None

    def init(self, rng, input_shape):
        kernel = jax.nn.initializers.glorot_uniform()(rng, (input_shape[-1], self.args.units))
        params = {"proj": {"kernel": kernel}, "biases": [jnp.zeros(self.args.units)]}
        return params, {}, (*input_shape[:-1], self.args.units)

    def call(self, params, state, x, *, training, rng, **_):
        return x @ params["proj"]["kernel"] + params["biases"][0], state
'''


def test_a_custom_layer_with_nested_params_trains_beside_dense_layers(tmp_path: Path):
    (tmp_path / "nested_params_layers.py").write_text(NESTED)
    setup, ds = setup_for(tmp_path, "{adam: 0.01}",
                          middle="nested_params_layers:Nested: {units: 5, activation: tanh}")
    held, carry, figures = train(setup, ds, "cpu")
    assert held.kernels.swapped == {"dense": "kernel", "dense_1": "kernel"}
    _, reference, reference_figures = train(setup, ds, "gpu")
    assert figures == pytest.approx(reference_figures, rel=1e-5)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-6)
