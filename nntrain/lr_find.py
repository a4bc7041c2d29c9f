"""The learning-rate range test (Smith 2015; fastai's `lr_find`; Géron's "train a few hundred
iterations while growing the rate exponentially").

From the config's initial weights, one training step at a time, the learning rate grows
geometrically from `min_lr` to `max_lr`: step `i` of `n` uses `min_lr * (max_lr/min_lr) **
(i / (n - 1))`, set in the optimizer state (`optax.inject_hyperparams`) before **every** step.
The steps are nntrain's own compiled training program with one step per call, so what is
measured is what `fit` would do, batch order, dropout and class weights included. A schedule
in the config's optimizer is replaced by a plain rate for the finder; callbacks do not run.

While it runs, the loss of each batch is smoothed by an exponential moving average with bias
correction (fastai's, beta 0.98), and the test stops when that exceeds 4x the lowest seen, or
the loss is not finite (that step is not recorded). A moving average lags: its minimum comes
tens of steps after the loss's, at rates where the loss already climbs. So the curve that is
plotted, written and searched for the lowest point is smoothed afterwards, forward and then
backward (as scipy's filtfilt), which does not shift it, over a span of a twentieth of the
steps. The suggestion is a tenth of the rate at its lowest point: the loss still falls fast
there, and it is safely below the point where training diverges.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nntrain.fsutil import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from nntrain.build import Setup
    from nntrain.data.sources import Dataset

BETA = 0.98  # the moving average's decay, as fastai
DIVERGE = 4.0  # stop when the smoothed loss exceeds this many times its lowest value
SKIP_START = 5  # the first steps' smoothed loss is too noisy to count as the lowest or to stop
MIN_FALL = 0.01  # a lowest point less than 1% under the start is no fall: no suggestion


@dataclass
class LRFindResult:
    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop_reason: str = "reached --max-lr"
    best_index: int | None = None  # where the smoothed loss was lowest
    suggestion: float | None = None
    notes: list[str] = field(default_factory=list)


def rate_at(step: int, steps: int, min_lr: float, max_lr: float) -> float:
    """The geometric ramp: min_lr at step 0, max_lr at step `steps - 1`."""
    return float(min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1)))


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's bias-corrected exponential moving average."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def centred(losses: list[float]) -> list[float]:
    """The moving average forward, then backward: smooth, and without the lag (a span of a
    twentieth of the points, at least 3)."""
    beta = 1 - 1 / max(3.0, len(losses) / 20)
    return smooth(smooth(losses, beta)[::-1], beta)[::-1]


def suggest(result: LRFindResult, min_lr: float, max_lr: float) -> None:
    """Fill in the lowest point and the suggestion (a tenth of the rate there), within the
    range tried."""
    values = result.smoothed
    if not values:
        result.notes.append("no step finished with a finite loss: lower --min-lr")
        return
    start = min(SKIP_START, len(values) - 1)
    best = start + int(np.argmin(values[start:]))
    result.best_index = best
    if best == start and len(values) > start + 1:
        result.notes.append(
            f"the smoothed loss only rose over the range (lowest at its start, "
            f"{result.learning_rates[start]:.3g}): every rate tried is too high; lower --min-lr")
        return
    if best > start and values[start] - values[best] < MIN_FALL * abs(values[start]):
        result.notes.append(
            f"the smoothed loss hardly fell over the range ({values[start]:.4g} at the start, "
            f"{values[best]:.4g} at its lowest): the test says nothing about the rate; try more "
            "--steps, or compare a few rates in short runs (nntrain tune)")
        return
    rate = result.learning_rates[best] / 10
    if rate < min_lr:
        result.notes.append("the loss was lowest near the start of the range: try a lower "
                            "--min-lr")
    if result.stop_reason == "reached --max-lr" and best >= len(values) - 3:
        result.notes.append("the loss was still falling at --max-lr: try a higher --max-lr")
    result.suggestion = float(min(max(rate, min_lr), max_lr))


def run_range_test(setup: Setup, dataset: Dataset, *, min_lr: float, max_lr: float,
                   steps: int, on_step: Callable[[int, float, float], None] | None = None,
                   ) -> LRFindResult:
    """Train up to `steps` steps from the initial weights with the growing rate."""
    import jax
    import jax.numpy as jnp

    from nntrain.build import class_weight_vector, output_class_names
    from nntrain.config.entries import entry_args, entry_name
    from nntrain.optimizers import build_optimizer, set_learning_rate
    from nntrain.train.fit import batch_for
    from nntrain.train.programs import Programs, epoch_order, initialize, to_device

    config = setup.loaded.config
    entry = config.compile.optimizer
    args = entry_args(entry).model_copy(update={"learning_rate": min_lr})  # no schedule
    setup = dataclasses.replace(setup, built_optimizer=build_optimizer(entry_name(entry), args))
    batch_size = batch_for(config.fit.batch_size, len(dataset.train))
    programs = Programs(setup, batch_size=batch_size, eval_batch_size=batch_size,
                        steps_per_call=1,
                        class_weight=class_weight_vector(setup, output_class_names(setup,
                                                                                   dataset)))
    step_program = programs.train_chunk(1)
    keys, params, state, opt_state = initialize(setup, config.seed)
    state = setup.model.adapt(params, state, dataset.train.x)
    carry = {"params": params, "state": state, "opt_state": opt_state,
             "step": jnp.int32(0)}
    n = len(dataset.train)
    train = to_device(dataset.train)
    per_epoch = math.ceil(n / batch_size)
    padded = per_epoch * batch_size
    zeros = jnp.asarray(programs.layout.zeros())
    result = LRFindResult()
    best, first, avg, order, order_epoch = math.inf, math.nan, 0.0, None, -1
    every = args.gradient_accumulation_steps or 1  # batches an update takes
    for i in range(steps):
        lr = rate_at(i, steps, min_lr, max_lr)
        carry = {**carry, "opt_state": set_learning_rate(carry["opt_state"], lr)}
        sums = zeros  # an accumulating update's loss is its batches' mean (same weights)
        for batch in range(i * every, (i + 1) * every):
            epoch, in_epoch = divmod(batch, per_epoch)
            if epoch != order_epoch:  # the data order `fit` would use, epoch after epoch
                order = epoch_order(keys["order"], epoch, n, padded, config.fit.shuffle)
                order_epoch = epoch
            carry, sums = step_program(carry, sums, train, order, in_epoch, keys["dropout"],
                                       n, 1)
        loss = programs.layout.result(np.asarray(jax.device_get(sums)))["loss"]
        if not math.isfinite(loss):
            result.stop_reason = f"the loss became {loss} at learning rate {lr:.3g}"
            break
        avg = BETA * avg + (1 - BETA) * loss
        smoothed = avg / (1 - BETA ** (i + 1))
        result.learning_rates.append(lr)
        result.losses.append(loss)
        if on_step is not None:
            on_step(i + 1, lr, smoothed)
        if i >= SKIP_START:
            best, first = min(best, smoothed), smoothed if i == SKIP_START else first
            if _diverged(smoothed, best, first):
                how = f"exceeded {DIVERGE:g}x its lowest value" if best > 0 else \
                    "rose back above its start by as much as it fell"
                result.stop_reason = f"the smoothed loss {how} at learning rate {lr:.3g}"
                break
    result.smoothed = centred(result.losses)
    suggest(result, min_lr, max_lr)
    return result


def _diverged(smoothed: float, best: float, first: float) -> bool:
    """Whether the loss has blown up: past DIVERGE times its lowest value, or for a loss
    that goes below zero (cosine similarity), back above its first counted value by as much
    again as it fell from there."""
    if best > 0:
        return smoothed > DIVERGE * best
    return smoothed > first + max(first - best, abs(first))


def write_csv(path: Path, result: LRFindResult) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
    for i, (lr, loss, sm) in enumerate(zip(result.learning_rates, result.losses,
                                           result.smoothed, strict=True)):
        writer.writerow([i + 1, f"{lr:.6g}", f"{loss:.6g}", f"{sm:.6g}"])
    atomic_write_text(path, buffer.getvalue())


def plot(path: Path, result: LRFindResult, title: str = "") -> None:
    """Loss against learning rate (log x): each batch faint, the smoothed loss bold, the
    lowest point and the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), dpi=100)
    ax = fig.subplots()
    lrs = np.asarray(result.learning_rates)
    if len(lrs):
        ax.plot(lrs, result.losses, color="C0", alpha=0.25, linewidth=1, label="loss (batch)")
        ax.plot(lrs, result.smoothed, color="C0", linewidth=2, label="smoothed loss")
        smoothed = np.asarray(result.smoothed)
        low = float(smoothed.min())
        head = float(smoothed[: max(1, min(len(smoothed), SKIP_START + 1))].max())
        top = max(head, min(float(np.max(result.losses)), DIVERGE * 1.1 * low))
        bottom = min(float(np.min(result.losses)), low - 0.1 * (top - low))
        ax.set_ylim(max(0.0, bottom) if low >= 0 else bottom, top + 0.05 * (top - low) + 1e-12)
    if result.best_index is not None:
        b = result.best_index
        ax.plot([lrs[b]], [result.smoothed[b]], "o", color="C3",
                label=f"lowest smoothed loss (lr {lrs[b]:.3g})")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C2", linestyle="--",
                   label=f"suggested learning rate {result.suggestion:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning rate finder")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
