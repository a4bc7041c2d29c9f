"""The peers `bench/run.py` measures nntrain against, each run in its own process:

    python bench/peers.py keras WORKDIR [--steps-per-execution K]
    python bench/peers.py jax WORKDIR [--chunk K]

WORKDIR holds `data.npz` (train_x, train_y, val_x, val_y: the split nntrain's own loader made)
and `spec.json` (the model as a list of layers, loss, optimizer, metrics, callbacks, epochs,
batch size, seed), both written by `bench/run.py`. Neither peer imports nntrain.

Each prints `BENCH_EPOCH_END <epoch> <time.time()>` as each epoch ends (after validation and
callbacks) and, last, one line `BENCH_RESULT {json}` with per-epoch seconds and final logs.

- keras: Keras 3 on JAX; the layers translated one by one, `fit(x, y, validation_data=...,
  shuffle=True)` with the config's callbacks mirrored (EarlyStopping, ModelCheckpoint with
  best weights only). Epoch time comes from a callback placed last. `--inputs scaled` (the
  default) feeds the data as Keras users and the textbook prepare it: the config's leading
  `rescaling` applied in NumPy (`X_train / 255.`, float64 arrays, which Keras casts to
  float32), the model without it. `--inputs raw` keeps the stored dtype (uint8 pixels) and
  the Rescaling layer inside the model, as nntrain does: Keras given nntrain's own trick.
- jax: the "what the hardware allows" reference, plain JAX + optax: data on the device, the
  epoch order a device permutation, batches gathered inside the compiled program, the last
  partial batch padded and masked (every example counts once, as in nntrain). Dense-only
  models run a whole epoch as one `lax.scan`; models with convolutions run jitted chunks of 8
  unrolled steps (rolled loops around convolutions are slow on CPU); `--chunk K` forces K
  unrolled steps per call (0: one scan). Validation loss and metrics every epoch; no
  checkpoints, no files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")


def epoch_end(epoch: int) -> None:
    print(f"BENCH_EPOCH_END {epoch} {time.time():.6f}", flush=True)


def load(workdir: Path):
    spec = json.loads((workdir / "spec.json").read_text())
    with np.load(workdir / "data.npz") as d:
        data = {k: d[k] for k in d.files}
    return spec, data


# -- Keras ---------------------------------------------------------------------------------
def scale_in_numpy(spec: dict, data: dict) -> list[dict]:
    """Apply the leading rescaling layers to the inputs as `X / 255.` does (float64 arrays);
    returns the layers left for the model."""
    layers = list(spec["layers"])
    while layers and layers[0]["type"] == "rescaling":
        scale, offset = float(layers[0]["scale"]), float(layers[0]["offset"])
        for key in ("train_x", "val_x"):
            data[key] = data[key] * scale + offset
        layers.pop(0)
    return layers


def run_keras(workdir: Path, steps_per_execution: int, inputs: str) -> dict:
    import keras

    spec, data = load(workdir)
    layers = scale_in_numpy(spec, data) if inputs == "scaled" else spec["layers"]
    keras.utils.set_random_seed(spec["seed"])
    dtype = data["train_x"].dtype  # float64 from NumPy scaling: the textbook's Input is float32
    x = keras.Input(shape=data["train_x"].shape[1:],
                    dtype="float32" if dtype.kind == "f" else str(dtype))
    h = x
    for layer in layers:
        t = layer["type"]
        if t == "rescaling":
            h = keras.layers.Rescaling(layer["scale"], layer["offset"])(h)
        elif t == "reshape":
            h = keras.layers.Reshape(tuple(layer["target_shape"]))(h)
        elif t == "flatten":
            h = keras.layers.Flatten()(h)
        elif t == "normalization":
            norm = keras.layers.Normalization(axis=layer["axis"])
            norm.adapt(data["train_x"])
            h = norm(h)
        elif t == "dense":
            h = keras.layers.Dense(layer["units"], activation=layer["activation"],
                                   use_bias=layer["use_bias"],
                                   kernel_initializer=layer["kernel_initializer"],
                                   bias_initializer=layer["bias_initializer"])(h)
        elif t == "conv2d":
            h = keras.layers.Conv2D(layer["filters"], layer["kernel_size"],
                                    strides=layer["strides"], padding=layer["padding"],
                                    dilation_rate=layer["dilation_rate"],
                                    activation=layer["activation"], use_bias=layer["use_bias"],
                                    kernel_initializer=layer["kernel_initializer"],
                                    bias_initializer=layer["bias_initializer"])(h)
        elif t == "batch_normalization":
            h = keras.layers.BatchNormalization(axis=layer["axis"], momentum=layer["momentum"],
                                                epsilon=layer["epsilon"], center=layer["center"],
                                                scale=layer["scale"])(h)
        elif t == "max_pooling2d":
            h = keras.layers.MaxPooling2D(layer["pool_size"], strides=layer["strides"],
                                          padding=layer["padding"])(h)
        elif t == "dropout":
            h = keras.layers.Dropout(layer["rate"])(h)
        else:
            raise SystemExit(f"keras peer: layer {t} not translated")
    model = keras.Model(x, h)
    opt = spec["optimizer"]
    if opt["name"] == "sgd":
        optimizer = keras.optimizers.SGD(opt["learning_rate"], momentum=opt["momentum"],
                                         nesterov=opt["nesterov"])
    elif opt["name"] == "adam":
        optimizer = keras.optimizers.Adam(opt["learning_rate"], beta_1=opt["beta_1"],
                                          beta_2=opt["beta_2"], epsilon=opt["epsilon"])
    else:
        raise SystemExit(f"keras peer: optimizer {opt['name']} not translated")
    metrics = [keras.metrics.RootMeanSquaredError() if m == "root_mean_squared_error" else m
               for m in spec["metrics"]]
    model.compile(optimizer=optimizer, loss=spec["loss"], metrics=metrics,
                  steps_per_execution=steps_per_execution)

    epoch_seconds: list[float] = []
    logs_seen: dict = {}

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)
            logs_seen.update({k: float(v) for k, v in (logs or {}).items()})
            epoch_end(epoch + 1)

    callbacks = []
    for cb in spec["callbacks"]:
        if cb["type"] == "early_stopping":
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=cb["monitor"], patience=cb["patience"],
                restore_best_weights=cb["restore_best_weights"]))
        elif cb["type"] == "model_checkpoint":
            callbacks.append(keras.callbacks.ModelCheckpoint(
                str(workdir / f"keras-{os.getpid()}.weights.h5"), monitor=cb["monitor"],
                save_best_only=cb["save_best_only"], save_weights_only=True))
    callbacks.append(Timer())  # last: its epoch time includes the other callbacks' work
    model.fit(data["train_x"], data["train_y"], batch_size=spec["batch_size"],
              epochs=spec["epochs"], validation_data=(data["val_x"], data["val_y"]),
              shuffle=spec["shuffle"], callbacks=callbacks, verbose=0)
    return {"epoch_seconds": epoch_seconds, "logs": logs_seen, "keras": keras.__version__,
            "steps_per_execution": steps_per_execution, "inputs": inputs,
            "input_dtype": str(data["train_x"].dtype)}


# -- plain JAX + optax -----------------------------------------------------------------------
def run_jax(workdir: Path, chunk_steps: int | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    spec, data = load(workdir)
    layers, B = spec["layers"], spec["batch_size"]
    regression = spec["loss"] in ("mse", "mean_squared_error")
    has_conv = any(layer["type"] == "conv2d" for layer in layers)

    def glorot(key, shape, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, jnp.float32, -limit, limit)

    # parameters and (non-trainable) state, one entry per layer
    key = jax.random.key(spec["seed"])
    params, state = [], []
    shape = data["train_x"].shape[1:]
    for layer in layers:
        key, sub = jax.random.split(key)
        t, p, s = layer["type"], {}, {}
        if t == "dense":
            fan_in = int(np.prod(shape))
            p = {"w": glorot(sub, (fan_in, layer["units"]), fan_in, layer["units"]),
                 "b": jnp.zeros(layer["units"])}
            shape = (layer["units"],)
        elif t == "conv2d":
            k, cin, cout = layer["kernel_size"], shape[-1], layer["filters"]
            p = {"w": glorot(sub, (k, k, cin, cout), k * k * cin, k * k * cout),
                 "b": jnp.zeros(cout)}
            shape = (*shape[:-1], cout)  # padding same, stride 1
        elif t == "batch_normalization":
            p = {"gamma": jnp.ones(shape[-1]), "beta": jnp.zeros(shape[-1])}
            s = {"mean": jnp.zeros(shape[-1]), "var": jnp.ones(shape[-1])}
        elif t == "normalization":
            x = data["train_x"].astype(np.float64)
            s = {"mean": jnp.asarray(x.mean(0), jnp.float32),
                 "var": jnp.asarray(x.var(0), jnp.float32)}
        elif t == "reshape":
            shape = tuple(layer["target_shape"])
        elif t == "max_pooling2d":
            pool = layer["pool_size"]
            shape = (shape[0] // pool, shape[1] // pool, shape[2])
        elif t == "flatten":
            shape = (int(np.prod(shape)),)
        params.append(p)
        state.append(s)

    act = {None: lambda v: v, "linear": lambda v: v, "relu": jax.nn.relu, "softmax": None}

    def apply(params, state, x, *, training, rng, mask):
        """Returns the last layer's pre-softmax values and the new state."""
        h, new_state = x, []
        for i, (layer, p, s) in enumerate(zip(layers, params, state, strict=True)):
            t, last = layer["type"], i == len(layers) - 1
            if t == "rescaling":
                h = h.astype(jnp.float32) * layer["scale"] + layer["offset"]
            elif t == "reshape":
                h = h.reshape(h.shape[0], *layer["target_shape"])
            elif t == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif t == "normalization":
                h = (h - s["mean"]) / jnp.sqrt(jnp.maximum(s["var"], 1e-7))
            elif t in ("dense", "conv2d"):
                if t == "dense":
                    h = h @ p["w"] + p["b"]
                else:
                    h = jax.lax.conv_general_dilated(
                        h, p["w"], (1, 1), "SAME",
                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]
                if not (last and layer["activation"] == "softmax"):
                    h = act[layer["activation"]](h)
            elif t == "batch_normalization":
                if training:
                    m = mask.reshape(-1, *([1] * (h.ndim - 1)))
                    count = jnp.maximum(m.sum() * (h.size // h.shape[0] // h.shape[-1]), 1)
                    axes = tuple(range(h.ndim - 1))
                    mean = (h * m).sum(axes) / count
                    var = (((h - mean) ** 2) * m).sum(axes) / count
                    mom = layer["momentum"]
                    s = {"mean": mom * s["mean"] + (1 - mom) * mean,
                         "var": mom * s["var"] + (1 - mom) * var}
                else:
                    mean, var = s["mean"], s["var"]
                h = (h - mean) * jax.lax.rsqrt(var + layer["epsilon"]) * p["gamma"] + p["beta"]
            elif t == "max_pooling2d":
                pool = layer["pool_size"]
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, pool, pool, 1),
                                          (1, pool, pool, 1), "VALID")
            elif t == "dropout" and training:
                rng, sub = jax.random.split(rng)
                keep = jax.random.bernoulli(sub, 1 - layer["rate"], h.shape)
                h = jnp.where(keep, h / (1 - layer["rate"]), 0.0)
            new_state.append(s)
        return h, new_state

    def batch_sums(params, state, xb, yb, w, *, training, rng):
        out, new_state = apply(params, state, xb, training=training, rng=rng, mask=w)
        n = w.sum()
        if regression:
            err = ((out.reshape(yb.shape) - yb) ** 2).reshape(yb.shape[0], -1).mean(1)
            loss_sum = (err * w).sum()
            metric = loss_sum  # RMSE = sqrt(sum of squared errors / count)
        else:
            logp = jax.nn.log_softmax(out)
            nll = -jnp.take_along_axis(logp, yb.reshape(-1, 1).astype(jnp.int32), 1)[:, 0]
            loss_sum = (nll * w).sum()
            metric = ((out.argmax(-1) == yb.reshape(-1)) * w).sum()
        return loss_sum / jnp.maximum(n, 1), (jnp.stack([loss_sum, n, metric]), new_state)

    opt = spec["optimizer"]
    if opt["name"] == "sgd":
        tx = optax.sgd(opt["learning_rate"], momentum=opt["momentum"] or None,
                       nesterov=opt["nesterov"])
    else:
        tx = optax.adam(opt["learning_rate"], b1=opt["beta_1"], b2=opt["beta_2"],
                        eps=opt["epsilon"])

    train_x, train_y = jax.device_put(data["train_x"]), jax.device_put(data["train_y"])
    val_x, val_y = jax.device_put(data["val_x"]), jax.device_put(data["val_y"])
    n_train, n_val = len(data["train_x"]), len(data["val_x"])
    steps, val_steps = math.ceil(n_train / B), math.ceil(n_val / B)

    def train_step(carry, i, order, rng):
        params, state, opt_state, sums = carry
        pos = i * B + jnp.arange(B)
        idx = order[jnp.minimum(pos, n_train - 1)]
        w = (pos < n_train).astype(jnp.float32)
        (_, (s, state)), grads = jax.value_and_grad(batch_sums, has_aux=True)(
            params, state, train_x[idx], train_y[idx], w, training=True,
            rng=jax.random.fold_in(rng, i))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state, sums + s)

    def val_step(sums, i, params, state):
        pos = i * B + jnp.arange(B)
        idx = jnp.minimum(pos, n_val - 1)
        w = (pos < n_val).astype(jnp.float32)
        _, (s, _) = batch_sums(params, state, val_x[idx], val_y[idx], w, training=False,
                               rng=None)
        return sums + s

    # dense-only: one lax.scan per epoch; convolutions: jitted chunks of 8 unrolled steps
    chunk = (8 if has_conv else None) if chunk_steps is None else (chunk_steps or None)

    # `first` is traced (one program per chunk length k, not per position)
    @partial(jax.jit, static_argnums=(4,), donate_argnums=(0,))
    def train_steps(carry, order, rng, first, k):
        if chunk is None:
            return jax.lax.scan(lambda c, i: (train_step(c, i, order, rng), None), carry,
                                first + jnp.arange(k))[0]
        for i in range(k):
            carry = train_step(carry, first + i, order, rng)
        return carry

    @partial(jax.jit, static_argnums=(4,))
    def val_steps_fn(sums, params, state, first, k):
        if chunk is None:
            return jax.lax.scan(lambda c, i: (val_step(c, i, params, state), None), sums,
                                first + jnp.arange(k))[0]
        for i in range(k):
            sums = val_step(sums, first + i, params, state)
        return sums

    @jax.jit
    def permutation(key, epoch):
        return jax.random.permutation(jax.random.fold_in(key, epoch), n_train)

    def chunks(n):
        if chunk is None:
            return [(0, n)]
        return [(f, min(chunk, n - f)) for f in range(0, n, chunk)]

    def finish(sums):
        loss_sum, n, metric = (float(v) for v in np.asarray(sums))
        n = max(n, 1e-12)
        return {"loss": loss_sum / n,
                ("root_mean_squared_error" if regression else "accuracy"):
                    math.sqrt(metric / n) if regression else metric / n}

    order_key, drop_key = jax.random.split(jax.random.key(spec["seed"] + 1))
    opt_state = tx.init(params)
    epoch_seconds, logs = [], {}
    for epoch in range(spec["epochs"]):
        start = time.perf_counter()
        order = permutation(order_key, epoch) if spec["shuffle"] else jnp.arange(n_train)
        carry = (params, state, opt_state, jnp.zeros(3))
        rng = jax.random.fold_in(drop_key, epoch)
        for first, k in chunks(steps):
            carry = train_steps(carry, order, rng, jnp.int32(first), k)
        params, state, opt_state, sums = carry
        logs = finish(sums)
        vsums = jnp.zeros(3)
        for first, k in chunks(val_steps):
            vsums = val_steps_fn(vsums, params, state, jnp.int32(first), k)
        logs.update({f"val_{k}": v for k, v in finish(vsums).items()})
        epoch_seconds.append(time.perf_counter() - start)
        epoch_end(epoch + 1)
    return {"epoch_seconds": epoch_seconds, "logs": logs,
            "mode": "lax.scan over the epoch" if chunk is None else f"unrolled chunks of {chunk}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].rstrip(":") + ".")
    parser.add_argument("peer", choices=("keras", "jax"))
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--inputs", choices=("scaled", "raw"), default="scaled",
                        help="keras: inputs scaled in NumPy as float64 (default), or raw with "
                             "the rescaling inside the model")
    parser.add_argument("--chunk", type=int, default=None,
                        help="jax: K unrolled steps per call, or 0 for one lax.scan per epoch "
                             "(default: scan for dense-only models, 8 with convolutions)")
    args = parser.parse_args()
    if args.peer == "keras":
        result = run_keras(args.workdir, args.steps_per_execution, args.inputs)
    else:
        result = run_jax(args.workdir, args.chunk)
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
