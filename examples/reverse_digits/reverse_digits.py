"""Batches for reverse_digits.yaml: reverse a sequence of digits, the classic
sequence-to-sequence exercise. The encoder reads the digits; the decoder, started from the
encoder's final state, reads only the positions 0-7 of the answer it writes."""

import numpy as np

LENGTH = 8  # digits per sequence
SIZES = {"train": 20_000, "validation": 2_000, "test": 2_000}
BATCH = 64


def examples(split: str, count: int | None = None) -> tuple[dict, np.ndarray]:
    """The split's inputs (digits, and the positions the decoder reads) and the reversed
    digits; a fixed set per split."""
    rng = np.random.default_rng(list(SIZES).index(split))
    digits = rng.integers(0, 10, (count or SIZES[split], LENGTH), dtype=np.int32)
    positions = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), digits.shape)
    return {"digits": digits, "positions": np.ascontiguousarray(positions)}, \
        np.ascontiguousarray(digits[:, ::-1])


def batches(split: str, epoch: int):
    x, y = examples(split)
    order = np.random.default_rng(epoch).permutation(len(y)) if split == "train" \
        else np.arange(len(y))
    for i in range(0, len(y), BATCH):
        rows = order[i:i + BATCH]
        yield {k: v[rows] for k, v in x.items()}, y[rows]
