"""The compiled programs: a chunk of training steps, a chunk of evaluation steps, an epoch's
example order. Everything per step stays on the device.

- The data lives on the device; each step gathers its batch from an order array drawn on the
  device from (seed, epoch), so shuffling costs no host work and no transfer.
- One call runs `K` steps: Python is touched once per chunk. The steps are a rolled
  `lax.fori_loop` with a traced trip count (compiles once whatever K is), except around
  convolutions and pooling windows on CPU, where a rolled loop runs many times slower than
  the same steps unrolled (a Python loop under `jit`, compile time growing with K). See
  `chunking`.
- Every batch has the same static shape; the last partial batch is padded and its padding
  masked out through the weights, so nothing recompiles and every example counts once.
- Loss and metrics accumulate as sums on the device; the host reads one small vector a chunk.
- The train state's buffers are donated, so parameters are updated in place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nntrain.build import Setup
from nntrain.config.entries import entry_name
from nntrain.data.arrays import ArraySet, aligned_empty
from nntrain.data.generator import GeneratorSplit
from nntrain.data.stream import Stream
from nntrain.train.devices import Placement, fetch
from nntrain.train.kernel_layout import KernelLayout

Carry = dict[str, Any]  # params, state, opt_state, step
# {"x": {name: array}, "y": {name: array}, "w": array, "wo": {output: array}} (w, wo optional)
DeviceData = dict[str, Any]


class SumsLayout:
    """Where each figure lives in the accumulated sums vector, and how to read it out."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.outputs = list(setup.graph.outputs)
        self.metric_slots: list[tuple[str, Any, int]] = []  # (log name, metric, offset)
        offset = 2 + (len(self.outputs) if setup.multi_output else 0)
        for out in self.outputs:
            for metric in setup.metrics[out]:
                name = f"{out}_{metric.name}" if setup.multi_output else metric.name
                self.metric_slots.append((name, metric, offset))
                offset += metric.size
        self.size = offset

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size, np.float32)  # a host array: no program to compile

    def result(self, sums: np.ndarray) -> dict[str, float]:
        sums = np.asarray(sums, dtype=np.float64)
        count = max(sums[1], 1e-12)
        logs = {"loss": float(sums[0] / count)}
        if self.setup.multi_output:
            for i, out in enumerate(self.outputs):
                logs[f"{out}_loss"] = float(sums[2 + i] / count)
        for name, metric, offset in self.metric_slots:
            logs[name] = float(metric.result(sums[offset:offset + metric.size]))
        return logs


# Measured on a 2-core CPU (JAX 0.10.2), Fashion-MNIST MLP at batch 32, seconds per epoch and
# to compile: 8 unrolled steps 0.74 / 3.4 s, 32 unrolled 0.74 / 10.9 s, a 128-step scan 0.69 /
# 1.4 s, the whole epoch in one scan 0.69 / 1.2 s. A small conv net steps 10-20x slower inside
# any rolled loop on CPU (DESIGN.md), so it keeps short unrolled chunks: fashion_cnn (10,000
# images, batch 128) 9.1 s per epoch with 1 step per call, 6.6 s with 2, 6.2 s with 4 (0.8 GiB
# peak), 6.3-7.3 s with 8 (1.0 GiB, twice the compile time).
ROLLED_STEPS = 128
UNROLLED_STEPS = 4
WINDOWED = ("conv", "depthwise_conv", "separable_conv", "max_pooling", "average_pooling")
# Steps per iteration of a rolled loop on an accelerator. There each iteration of a loop
# whose trip count is traced waits for its condition to reach the host, some 15 us. Measured
# on an H100 (JAX 0.11.2), seconds per epoch and for epoch 1 with its compile, by steps an
# iteration: fashion_mlp at batch 32 (1,719 steps of ~50 us) 1: 0.116 / 3.5 s, 4: 0.088 /
# 4.3 s, 8: 0.089 / 6.9 s, 16: 0.080-0.088 / 9.3 s (the hand-written unrolled loop 0.069);
# housing_mlp 1: 0.031, 8: 0.024. fashion_cnn's steps are ~400 us: 1: 0.166 / 6.7 s, 8: 0.157
# / 18.2 s, so models with windows keep one. On a CPU an iteration costs next to nothing.
ACCELERATOR_STEPS_PER_ITERATION = 4


def steps_per_iteration(setup: Setup, backend: str | None = None) -> int:
    """How many steps each iteration of a rolled loop runs, for this model and backend."""
    backend = backend or jax.default_backend()
    if backend == "cpu" or _windowed(setup):
        return 1
    return ACCELERATOR_STEPS_PER_ITERATION


def _windowed(setup: Setup) -> bool:
    return any(kind.startswith(WINDOWED) for node in setup.graph.nodes
               for kind in _layer_types(node))


def _layer_types(node: Any) -> Iterator[str]:
    """A node's layer type, and the type of the layer it wraps (time_distributed)."""
    yield node.type
    if node.type == "time_distributed":
        yield entry_name(node.args.layer)


def rolled_loop(step: Callable[[Any, Any], Any], carry: Any, steps: Any, unroll: int) -> Any:
    """`carry = step(i, carry)` for i in 0..steps-1 (`steps` may be traced): a while loop of
    `unroll` steps an iteration, then one of the steps left over."""
    def body(i, c):
        for j in range(unroll):
            c = step(i * unroll + j, c)
        return c

    carry = jax.lax.fori_loop(0, steps // unroll, body, carry)
    if unroll == 1:
        return carry
    done = steps // unroll * unroll
    return jax.lax.fori_loop(0, steps - done, lambda i, c: step(done + i, c), carry)


def chunking(setup: Setup, steps_per_epoch: int, requested: int | str = "auto",
             backend: str | None = None) -> tuple[int, bool]:
    """(steps per compiled call, rolled?) for this model on this backend. A requested K is
    honoured; only the unrolled/rolled choice stays automatic."""
    backend = backend or jax.default_backend()
    rolled = not (_windowed(setup) and backend == "cpu")
    k = (ROLLED_STEPS if rolled else UNROLLED_STEPS) if requested == "auto" else int(requested)
    return max(1, min(k, steps_per_epoch)), rolled


class Programs:
    """Jitted chunks of train and eval steps for one setup and batch size."""

    def __init__(self, setup: Setup, *, batch_size: int, eval_batch_size: int,
                 steps_per_call: int, rolled: bool = False,
                 class_weight: np.ndarray | None = None,
                 placement: Placement | None = None, unroll: int | None = None) -> None:
        self.setup = setup
        self.model = setup.model
        self.layout = SumsLayout(setup)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.steps_per_call = steps_per_call
        self.rolled = rolled
        self.unroll = unroll or steps_per_iteration(setup)
        self.placement = placement or Placement(tuple(jax.devices()[:1]))
        self.kernels = KernelLayout(setup.model, setup.optimizer,
                                    self.placement.devices[0].platform,
                                    batch_size // len(self.placement.devices))
        self.class_weight = None if class_weight is None else jnp.asarray(class_weight)
        self.logits_for = frozenset(o for o, loss in setup.losses.items() if loss.takes_logits)
        self._train_chunks: dict[int | None, Callable] = {}
        self._eval_chunks: dict[int | None, Callable] = {}
        # training programs compiling on a thread (compile_train_ahead), by train_chunk key
        self._compiling: dict[int | None, Future] = {}

    # -- one batch -------------------------------------------------------------------------
    def _batch(self, params, state, xb, yb, w, n, *, training: bool, rng, mask):
        activity: list[jax.Array] = []
        steps: dict[str, jax.Array] = {}  # masks over the steps of outputs that have one
        outputs, logits, new_state = self.model.apply(
            params, state, xb, training=training, rng=rng, logits_for=self.logits_for,
            mask=mask, activity=activity, output_masks=steps,
        )
        count = n.astype(jnp.float32)
        total = jnp.float32(0.0)
        out_sums, metric_sums = [], []
        for out in self.layout.outputs:
            loss = self.setup.losses[out]
            pred = logits.get(out, outputs[out]) if loss.takes_logits else outputs[out]
            real = steps[out].astype(jnp.float32) if out in steps else None
            if real is None:
                out_sum = (loss.fn(yb[out], pred) * w[out]).sum()
            else:
                out_sum = (loss.fn(yb[out], pred, real) * w[out]).sum()
                # Keras's masked sum_over_batch_size: over the batch's real steps, counted
                # here as that mean times the examples (the step's total divides by those)
                out_sum = out_sum * count / jnp.maximum((real * mask[:, None]).sum(), 1.0)
            out_sums.append(out_sum)
            total = total + self.setup.loss_weights[out] * out_sum
            # padding rows count for no metric; the weights only for weighted_metrics; a
            # masked output's metrics weigh each real step
            for m in self.setup.metrics[out]:
                weight = w[out] if m.weighted else mask
                metric_sums.append(m.update(yb[out], outputs[out], weight if real is None
                                            else weight[:, None] * real))
        # Keras's sum_over_batch_size: weighted losses divided by the examples in the batch
        loss = total / jnp.maximum(count, 1.0)
        if self.model.penalties or activity:  # in the loss and in the figures (`loss`,
            # `val_loss`), as in Keras; not in each output's own loss
            penalty = sum(activity, self.model.penalty(params))
            loss, total = loss + penalty, total + penalty * count
        head = [total, count]
        if self.setup.multi_output:
            head += out_sums
        sums = jnp.concatenate([jnp.stack(head), *metric_sums]) if metric_sums \
            else jnp.stack(head)
        return loss, (sums, new_state)

    def _rows(self, data: DeviceData, idx: jax.Array, valid: jax.Array):
        """The batch at `idx`, and each output's example weights: rows that are not `valid`
        (padding) get weight 0. On a mesh each device gathers and computes its slice of the
        batch."""
        idx, valid = self.placement.shard_batch((idx, valid))
        xb = {k: v[idx] for k, v in data["x"].items()}
        yb = {k: v[idx] for k, v in data["y"].items()}
        if "valid" in data:  # generated chunks mark their padding rows (data/generator.py)
            valid = valid & data["valid"][idx]
        mask = valid.astype(jnp.float32)
        shared = mask * data["w"][idx] if "w" in data else mask
        own = data.get("wo", {})
        w = {out: shared * own[out][idx] if out in own else shared
             for out in self.layout.outputs}
        return xb, yb, w, valid.sum(), mask

    def _gather(self, data: DeviceData, order, first: jax.Array, size: int, n_total):
        # a streamed chunk holds the rows from epoch position `base` on (data/stream.py)
        idx = jax.lax.dynamic_slice(order, (first - data.get("base", 0),), (size,))
        return self._rows(data, idx, (first + jnp.arange(size)) < n_total)

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, carry: Carry, sums, data, order, step_in_epoch, rng, n_total):
        B = self.batch_size
        xb, yb, w, n, mask = self._gather(data, order, step_in_epoch * B, B, n_total)
        if self.class_weight is not None:  # one output (build.check_class_weight)
            out = self.layout.outputs[0]
            w = {out: w[out] * self.class_weight[class_indices(yb[out])]}
        step_rng = jax.random.fold_in(rng, carry["step"])
        # the carry holds the kernels in the chunk's layout (kernel_layout.py): the batch
        # sees Keras's, and the gradients come back in the carry's
        def held(params, *args, **kwargs):
            return self._batch(self.kernels.params(params), *args, **kwargs)

        (_, (batch_sums, new_state)), grads = jax.value_and_grad(held, has_aux=True)(
            carry["params"], carry["state"], xb, yb, w, n, training=True, rng=step_rng,
            mask=mask,
        )
        updates, opt_state = self.setup.optimizer.update(grads, carry["opt_state"], carry["params"])
        params = optax.apply_updates(carry["params"], updates)
        if self.model.constraints:  # Keras's axes: on the kernels as Keras holds them
            params = self.kernels.params(self.model.constrain(self.kernels.params(params)))
        state = {**carry["state"], **new_state}
        return {"params": params, "state": state, "opt_state": opt_state,
                "step": carry["step"] + 1}, sums + batch_sums

    def _train_chunk(self, carry, sums, data, order, first_step, rng, n_total, steps):
        carry = self.kernels.carry(carry)
        if self.rolled:  # `steps` is traced: one program for every chunk length
            def step(i, c):
                return self._train_step(*c, data, order, first_step + i, rng, n_total)
            carry, sums = rolled_loop(step, (carry, sums), steps, self.unroll)
        else:
            for i in range(steps):  # unrolled on purpose: see the module docstring
                carry, sums = self._train_step(carry, sums, data, order, first_step + i, rng,
                                               n_total)
        return self.kernels.carry(carry), sums

    def train_chunk(self, steps: int) -> Callable:
        """The compiled chunk that runs `steps` steps: `f(carry, sums, data, order,
        first_step, rng, n_total, steps)`."""
        key = None if self.rolled else steps
        compiling = self._compiling.pop(key, None)
        if compiling is not None:  # compiled ahead: wait for it rather than compile it again
            wait_for_compile(compiling)
        if key not in self._train_chunks:
            self._train_chunks[key] = jax.jit(self._train_chunk, donate_argnums=(0,),
                                              static_argnums=() if self.rolled else (7,))
        return self._train_chunks[key]

    def compile_train_ahead(self, carry: Any, data: DeviceData, order: Any, n_total: int,
                            rng: Any) -> None:
        """Start compiling, each on a thread of its own, the programs `train_epoch(carry,
        data, order, n_total, rng)` will run from the epoch's first step, from
        ShapeDtypeStructs of the arguments as jit will see them (`shapes_as_passed`,
        `device_shapes`, `Placement.as_replicated`): the Fitter starts it before the init
        program compiles. `train_chunk` then waits for its program instead of compiling it
        again; arguments of other types find no program and compile their own."""
        n_steps = math.ceil(n_total / self.batch_size)
        sums = self.placement.replicate(self.layout.zeros())
        lengths: dict[int | None, int] = {}  # key: the chunk length to compile it with
        for _, k, _, _ in self._feed(data, order, self.batch_size, 0, n_steps):
            lengths.setdefault(None if self.rolled else k, k)
        for key, k in lengths.items():
            if key not in self._compiling:
                program = self.train_chunk(k)  # the jit object, made on this thread
                self._compiling[key] = compile_on_thread(
                    "compile-training", lambda program=program, k=k: program.lower(
                        carry, sums, data, order, 0, rng, n_total, k).compile())

    def train_epoch(self, carry: Carry, data: DeviceData | Stream | GeneratorSplit,
                    order: jax.Array, n_total: int, rng: jax.Array,
                    on_chunk: Callable[[int, np.ndarray], None] | None = None, *,
                    start_step: int = 0, sums: np.ndarray | None = None,
                    should_stop: Callable[[], bool] | None = None, epoch: int = 0,
                    meanwhile: Callable[[Carry], None] | None = None,
                    report_late: bool = True) -> tuple[Carry, np.ndarray, int]:
        """Run one epoch (or the rest of one, from `start_step` with the `sums` so far) in
        chunks. `on_chunk(steps_done, sums)` sees each chunk's running sums, read one chunk
        late so the device never waits for the host; with `report_late` false, as soon as
        the chunk is done, before the next is started (so that a `should_stop` decided there
        stops right after that chunk). `should_stop()` is asked after each chunk.
        `meanwhile(carry)` runs once, while the device runs the first chunk (the carry it
        gets is that chunk's, still being computed). Returns (carry, sums, steps done)."""
        n_steps = math.ceil(n_total / self.batch_size)
        sums = self.placement.replicate(self.layout.zeros() if sums is None
                                        else np.asarray(sums, np.float32))
        done, pending = start_step, None
        for first, k, chunk, chunk_order in self._feed(data, order, self.batch_size,
                                                       start_step, n_steps, epoch):
            carry, sums = self.train_chunk(k)(carry, sums, chunk, chunk_order, first, rng,
                                              n_total, k)
            if meanwhile is not None:
                meanwhile(carry)
                meanwhile = None
            done = first + k
            if on_chunk is not None and not report_late:
                on_chunk(done, fetch(sums))
            elif on_chunk is not None:
                if pending is not None:
                    on_chunk(*pending)
                pending = (done, sums)
            if should_stop is not None and should_stop():
                break
        host_sums = fetch(sums)
        if on_chunk is not None and (report_late or done == start_step):
            on_chunk(done, host_sums)
        return carry, host_sums, done

    # -- evaluation --------------------------------------------------------------------------
    def _eval_step(self, params, state, sums, data, step, n_total):
        B = self.eval_batch_size
        xb, yb, w, n, mask = self._gather_eval(data, step * B, B, n_total)
        _, (batch_sums, _) = self._batch(params, state, xb, yb, w, n, training=False, rng=None,
                                         mask=mask)
        return sums + batch_sums

    def _eval_chunk(self, params, state, sums, data, first_step, n_total, steps):
        if self.rolled:
            def step(i, s):
                return self._eval_step(params, state, s, data, first_step + i, n_total)
            return rolled_loop(step, sums, steps, self.unroll)
        for i in range(steps):
            sums = self._eval_step(params, state, sums, data, first_step + i, n_total)
        return sums

    def compile_evaluate(self, params: Any, state: Any, data: DeviceData, n_total: int) -> None:
        """Compile the programs `evaluate(params, state, data, n_total)` will run, without
        running them: called while the device trains, the compile costs the epoch no time
        on an accelerator, and on a CPU it shares the cores with training instead of waiting
        its turn after it. `evaluate` then finds them compiled."""
        n_steps = math.ceil(n_total / self.eval_batch_size)
        sums = self.placement.replicate(self.layout.zeros())
        lengths = {k for _, k, _, _ in self._feed(data, None, self.eval_batch_size, 0, n_steps)}
        for k in sorted(lengths):
            self.eval_chunk(k).lower(params, state, sums, data, 0, n_total, k).compile()

    def _gather_eval(self, data, first, size, n_total):
        # clip the positions instead of an order array: rows past the end repeat the last
        # row and are masked out, so every batch keeps its static shape
        positions = first + jnp.arange(size)
        idx = jnp.minimum(positions, n_total - 1) - data.get("base", 0)
        return self._rows(data, idx, positions < n_total)

    def eval_chunk(self, steps: int) -> Callable:
        key = None if self.rolled else steps
        if key not in self._eval_chunks:
            self._eval_chunks[key] = jax.jit(self._eval_chunk,
                                             static_argnums=() if self.rolled else (6,))
        return self._eval_chunks[key]

    def evaluate(self, params: Any, state: Any, data: DeviceData, n_total: int,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
        """Loss and metrics over `data`; None if `should_stop()` said so before the last
        part was evaluated. It is asked between parts (a rolled program's set in about ten,
        so that a stop lands soon), each waited for first; with several processes it must
        be a collective decision, asked as often in each."""
        n_steps = math.ceil(n_total / self.eval_batch_size)
        sums = self.placement.replicate(self.layout.zeros())
        parts = math.ceil(n_steps / 10) if should_stop is not None else None
        for i, (first, k, chunk, _) in enumerate(
                self._feed(data, None, self.eval_batch_size, 0, n_steps, rolled_per_call=parts)):
            if should_stop is not None and i > 0:
                jax.block_until_ready(sums)
                if should_stop():
                    return None
            sums = self.eval_chunk(k)(params, state, sums, chunk, first, n_total, k)
        return self.layout.result(fetch(sums))

    def _feed(self, data: DeviceData | Stream | GeneratorSplit, order, batch_size: int,
              start_step: int, n_steps: int, epoch: int = 0,
              rolled_per_call: int | None = None) -> Iterator[tuple[int, int, Any, Any]]:
        """(first step, steps, data, order) for each compiled call: the device-resident set
        in chunks of `steps_per_call` (a rolled evaluation: all at once, or
        `rolled_per_call` steps a call), or a stream's chunks."""
        if isinstance(data, Stream | GeneratorSplit):
            rows = self.steps_per_call * batch_size
            host_order = None if order is None or isinstance(data, GeneratorSplit) \
                else fetch(order)
            for first, k, chunk in data.chunks(host_order, batch_size, start_step, n_steps,
                                               self.steps_per_call, epoch=epoch):
                yield first, k, chunk, data.local_order(rows)
            return
        # a rolled loop compiles once whatever its length: a whole eval set in one call
        per_call = (rolled_per_call or n_steps) if self.rolled and order is None \
            else self.steps_per_call
        for first in range(start_step, n_steps, per_call):
            k = min(per_call, n_steps - first)
            if k < per_call and not self.rolled:
                # the remainder as single steps: one more short program to compile, not
                # another long unrolled one (seconds for a conv net)
                for step in range(first, first + k):
                    yield step, 1, data, order
            else:
                yield first, k, data, order


def class_indices(y: jax.Array) -> jax.Array:
    """Each example's class, as Keras's class_weight reads it: the argmax of one-hot targets,
    else the rounded label (class indices, or 0/1 for one sigmoid unit)."""
    if y.ndim > 1 and y.shape[-1] != 1:
        return jnp.argmax(y, axis=-1)
    return jnp.round(y.reshape(y.shape[0])).astype(jnp.int32)


def run_once(fn: Callable, *args: Any, static_argnums: tuple[int, ...] = ()) -> Any:
    """`fn(*args)` as one compiled program, compiled without optimization on CPU: for the
    set-up programs that run once, for milliseconds, where optimizing costs most of the
    compile time (the weight draws took 1.0 of 1.1 s to compile optimized, fashion_mlp)."""
    lowered = jax.jit(fn, static_argnums=static_argnums).lower(*args)
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return lowered.compile(options)(*(a for i, a in enumerate(args) if i not in static_argnums))


def compile_on_thread(name: str, compile_: Callable[[], Any]) -> Future:
    """`compile_()` on a thread of its own (XLA's compiler lets go of the GIL)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(compile_)
    finally:
        pool.shutdown(wait=False)


def wait_for_compile(compiling: Future) -> None:
    """Wait for a program compiling ahead. If that compile failed, the call compiles the
    program itself, and raises the error again if it is the program's (a custom layer's);
    one of the moment (a GPU short of memory while the init program ran) is left behind."""
    with contextlib.suppress(Exception):
        compiling.result()


def _derive_keys(seed: int) -> dict[str, jax.Array]:
    """Independent streams for init, data order and dropout, all from the config's seed."""
    root = jax.random.key(seed)
    return {"init": jax.random.fold_in(root, 0), "order": jax.random.fold_in(root, 1),
            "dropout": jax.random.fold_in(root, 2)}


def _init(setup: Setup, seed: int) -> tuple[dict[str, jax.Array], Any, Any, Any]:
    keys = _derive_keys(seed)
    params, state = setup.model.init(keys["init"])
    return keys, params, state, setup.optimizer.init(params)


def initialize(setup: Setup, seed: int) -> tuple[dict[str, jax.Array], Any, Any, Any]:
    """The run's keys (`init`, `order`, `dropout`), the model's params and state, and the
    optimizer's state for them, from one program with the seed compiled in (a seed may be
    over int32's range). The random bits are those of `model.init` compiled optimized; a
    scaled draw (random_uniform's) may round its last bit differently."""
    return run_once(partial(_init, setup), seed, static_argnums=(0,))


def initial_shapes(setup: Setup, seed: int) -> tuple[dict[str, Any], Any, Any, Any]:
    """The shapes of what `initialize` returns, traced without compiling or drawing."""
    return jax.eval_shape(partial(_init, setup, seed))


@partial(jax.jit, static_argnums=(2, 3, 4))
def epoch_order(rng: jax.Array, epoch: int, n: int, padded: int, shuffle: bool) -> jax.Array:
    """The epoch's example order, drawn on the device from the run's key and the epoch, padded
    to whole batches (padding rows are masked out by position)."""
    order = jax.random.permutation(jax.random.fold_in(rng, epoch), n) if shuffle \
        else jnp.arange(n)
    return jnp.pad(order.astype(jnp.int32), (0, padded - n))


def place(data: ArraySet | GeneratorSplit, placement: Placement | None,
          stream: bool) -> DeviceData | Stream | GeneratorSplit:
    """A split on the device(s), or streamed to them when it is over the memory budget."""
    put = jax.device_put if placement is None else placement.replicate
    if isinstance(data, GeneratorSplit):
        data.put = put
        return data
    if stream:
        return Stream(data, put)
    return to_device(data, placement=placement)


def to_device(data: ArraySet, with_targets: bool = True,
              placement: Placement | None = None) -> DeviceData:
    """Move an ArraySet to the device(s), keeping compact dtypes (uint8 pixels)."""
    out = _device_tree(data, with_targets, _in_memory)
    return jax.device_put(out) if placement is None else placement.replicate(out)


def device_shapes(data: ArraySet, placement: Placement) -> DeviceData:
    """What jit will see of `to_device(data, placement=placement)`, without moving it."""
    return placement.as_replicated(jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, jax.dtypes.canonicalize_dtype(a.dtype)),
        _device_tree(data, True, np.asarray)))


def _device_tree(data: ArraySet, with_targets: bool,
                 array: Callable[[np.ndarray], np.ndarray]) -> DeviceData:
    out: DeviceData = {"x": {k: array(v) for k, v in data.x.items()},
                       "y": {k: array(v) for k, v in data.y.items()} if with_targets else {}}
    if data.sample_weight is not None:
        out["w"] = np.asarray(data.sample_weight, np.float32)
    if data.output_weights:
        out["wo"] = {k: np.asarray(v, np.float32) for k, v in data.output_weights.items()}
    return out


def _in_memory(array: np.ndarray) -> np.ndarray:
    """A memory-mapped `.npy` read into memory first: a CPU device would use the file's
    mapping in place, and a file rewritten during the run would change the data under it."""
    if not isinstance(array, np.memmap):
        return array
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy
