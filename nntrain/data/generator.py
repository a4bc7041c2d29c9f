"""Data from the user's Python function (`data: {generator: my_data:batches}`), the
textbooks' answer to data that does not fit in memory.

nntrain calls `batches(split, epoch)` with split `"train"`, `"validation"` or `"test"` and
the 0-based epoch, once per pass over that split; it returns an iterable of batches, each
`(x, y)` or `(x, y, sample_weight)`, with `x` and `y` arrays (one model input or output) or
dicts keyed by input and output names, `sample_weight` an array for every output or a dict
of arrays keyed by output names (an output left out is unweighted), and at most
`fit.batch_size` rows (usually exactly that; a shorter batch is padded and its padding
masked). `None` means there is no such split.

Each split is counted once at the start (batches and rows, the first batch checked against
the model). Batches are then stacked into chunks of steps, the next chunk prepared by a
background thread while the device runs this one, like a stream (data/stream.py): each
chunk also carries `valid`, which rows are real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

import numpy as np

from nntrain.data.arrays import ArraySet
from nntrain.errors import DataError

BatchFunction = Callable[[str, int], Iterable[Any] | None]


class GeneratorSplit:
    """One split of generated batches, fed to the device chunk by chunk. `len()` is the
    number of batch positions (steps x batch size); `examples` the real rows."""

    def __init__(self, fn: BatchFunction, name: str, split: str, batch_size: int,
                 check: Callable[[ArraySet, str], None], put: Callable[[Any], Any] | None = None,
                 io_names: tuple[list[str], list[str]] = ([], [])) -> None:
        self.fn, self.name, self.split, self.batch_size = fn, name, split, batch_size
        self.io_names, self.check, self.put = io_names, check, put
        self.steps, self.examples = 0, 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nntrain-generator")
        self._orders: dict[int, Any] = {}
        self._form: tuple | None = None  # the first batch's, which every batch must have

    @classmethod
    def open(cls, fn: BatchFunction, name: str, split: str, batch_size: int,
             check: Callable[[ArraySet, str], None],
             io_names: tuple[list[str], list[str]]) -> GeneratorSplit | None:
        """The split, counted and its first batch checked; None if `fn` gives none."""
        made = cls(fn, name, split, batch_size, check, io_names=io_names)
        batches = made._batches(0)
        if batches is None:
            return None
        for batch in batches:  # each checked as it is read (_arrays)
            rows = len(batch)
            made.steps, made.examples = made.steps + 1, made.examples + rows
        if made.steps == 0:
            raise DataError(f"{name}('{split}', 0) gave no batches",
                            "yield at least one (x, y) batch")
        return made

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def digest(self) -> str:
        return f"not hashed: batches from {self.name}"

    # -- reading the user's batches --------------------------------------------------------
    def _batches(self, epoch: int) -> Iterator[ArraySet] | None:
        try:
            made = self.fn(self.split, epoch)
        except Exception as e:  # the user's code may raise anything; --debug shows where
            raise DataError(f"{self.name}('{self.split}', {epoch}) failed: "
                            f"{type(e).__name__}: {e}", _FIX_THE_GENERATOR) from e
        if made is None:
            return None
        return (self._arrays(b, i) for i, b in enumerate(_guarded(made, self.name)))

    def _arrays(self, batch: Any, index: int) -> ArraySet:
        where = f"{self.name}: batch {index + 1} of '{self.split}'"
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise DataError(f"{where} is a {type(batch).__name__}",
                            "yield (x, y) or (x, y, sample_weight) tuples")
        inputs, outputs = self.io_names
        x, y = _named(batch[0], inputs, where, "input"), _named(batch[1], outputs, where,
                                                                "output")
        weight, per_output = None, {}
        if len(batch) == 3 and isinstance(batch[2], dict):
            unknown = [n for n in batch[2] if n not in outputs]
            if unknown:
                raise DataError(f"{where}: sample weights for {', '.join(map(str, unknown))}, "
                                "not an output of the model",
                                f"key the sample weights by output names: {', '.join(outputs)}")
            per_output = {n: np.asarray(w, np.float32) for n, w in batch[2].items()}
        elif len(batch) == 3:
            weight = np.asarray(batch[2], np.float32)
        made = ArraySet(x, y, weight, per_output)
        if len(made) > self.batch_size:
            raise DataError(f"{where} has {len(made)} rows, more than fit.batch_size "
                            f"({self.batch_size})", "yield batches of fit.batch_size rows")
        # every batch like the first, which was checked against the model: batches are
        # stacked into one device chunk
        form = _form(made)
        if self._form is None:
            self._form = form
        elif form != self._form:
            raise DataError(f"{where} differs from the first batch: {_describe(form)}, the "
                            f"first {_describe(self._form)}",
                            "yield batches of one form: the same arrays, shapes per example "
                            "and dtypes, with sample weights in all or none")
        # every batch's values too (labels past the classes, NaN): epochs may differ
        self.check(made, where)
        return made

    # -- chunks for the device -------------------------------------------------------------
    def local_order(self, rows: int) -> Any:
        if rows not in self._orders:
            self._orders[rows] = self.put(np.arange(rows, dtype=np.int32))
        return self._orders[rows]

    def chunks(self, order: Any, batch_size: int, start_step: int, n_steps: int, per_call: int,
               epoch: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(first step, steps, device chunk) from `start_step` on (the batches before it are
        read and skipped: a resumed epoch sees the batches it would have seen)."""
        batches = self._batches(epoch)
        if batches is None:
            raise DataError(f"{self.name}('{self.split}', {epoch}) gave None this time")
        batches = islice(batches, start_step, None)
        plan = [(s, min(per_call, n_steps - s)) for s in range(start_step, n_steps, per_call)]
        ahead = None
        for i, (first, k) in enumerate(plan):
            job = ahead or self._pool.submit(self._chunk, batches, first, k, per_call)
            ahead = None
            if i + 1 < len(plan):
                ahead = self._pool.submit(self._chunk, batches, *plan[i + 1], per_call)
            yield first, k, job.result()

    def _chunk(self, batches: Iterator[ArraySet], first: int, k: int, per_call: int):
        B, parts = self.batch_size, list(islice(batches, k))
        if len(parts) < k:
            raise DataError(f"{self.name}('{self.split}', ...) gave {first + len(parts)} "
                            f"batches this pass, {self.steps} the first time",
                            "give the same number of batches on every pass")
        rows = per_call * B

        def stack(arrays: list[np.ndarray]) -> np.ndarray:
            out = np.zeros((rows, *arrays[0].shape[1:]), arrays[0].dtype)
            for i, a in enumerate(arrays):
                out[i * B:i * B + len(a)] = a
            return out

        valid = np.zeros(rows, bool)
        for i, p in enumerate(parts):
            valid[i * B:i * B + len(p)] = True
        chunk: dict[str, Any] = {
            "x": {n: stack([p.x[n] for p in parts]) for n in parts[0].x},
            "y": {n: stack([p.y[n] for p in parts]) for n in parts[0].y},
            "valid": valid, "base": np.int32(first * B)}
        if parts[0].sample_weight is not None:
            chunk["w"] = stack([p.sample_weight for p in parts])
        if parts[0].output_weights:
            chunk["wo"] = {n: stack([p.output_weights[n] for p in parts])
                           for n in parts[0].output_weights}
        return self.put(chunk)


def _form(batch: ArraySet) -> tuple:
    """What must match between batches: each array's shape per example and dtype, and
    which sample weights the batch has."""
    def arrays(named: dict[str, np.ndarray]) -> tuple:
        return tuple((n, a.shape[1:], a.dtype.str) for n, a in named.items())

    return arrays(batch.x), arrays(batch.y), tuple(batch.weights())


def _describe(form: tuple) -> str:
    x, y, weights = form
    shapes = ", ".join(f"{n} {shape} {np.dtype(dtype).name}" for n, shape, dtype in (*x, *y))
    if not weights:
        return f"{shapes}, without sample weights"
    if weights == ("sample_weight",):
        return f"{shapes}, with sample weights"
    named = ", ".join(w.split(":", 1)[1] for w in weights if ":" in w)
    return f"{shapes}, with sample weights for {named}"


_FIX_THE_GENERATOR = "the error is in the generator's own code: `nntrain --debug fit ...` " \
    "shows its traceback"


def _guarded(batches: Iterable[Any], name: str) -> Iterator[Any]:
    """The user's iterable, with errors raised inside it reported as data errors."""
    try:
        iterator = iter(batches)
    except TypeError:
        raise DataError(f"{name} returned a {type(batches).__name__}, not an iterable of "
                        "batches", "return (or be) a generator of (x, y) batches") from None
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except DataError:
            raise
        except Exception as e:  # the user's code may raise anything; --debug shows where
            raise DataError(f"{name} raised {type(e).__name__}: {e}", _FIX_THE_GENERATOR) from e


def _named(value: Any, names: list[str], where: str, what: str) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        missing = [n for n in names if n not in value]
        if missing:
            raise DataError(f"{where}: no {what} named {', '.join(missing)}",
                            f"key the {what}s by the model's {what} names: {', '.join(names)}")
        return {n: np.asarray(value[n]) for n in names}
    if len(names) != 1:
        raise DataError(f"{where}: the model has {len(names)} {what}s",
                        f"give a dict keyed by {', '.join(names)}")
    return {names[0]: np.asarray(value)}
