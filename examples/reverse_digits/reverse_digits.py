"""Batches for configs/reverse_digits.yaml: reverse a sequence of digits, the classic
sequence-to-sequence exercise. The encoder reads the digits; the decoder reads the answer so
far (a start token, then the reversed digits shifted by one: teacher forcing) and predicts
the next reversed digit at each step."""

import numpy as np

LENGTH = 8  # digits per sequence
START = 10  # the decoder's first token; digits are 0-9
SIZES = {"train": 20_000, "validation": 2_000, "test": 2_000}
BATCH = 64


def _examples(split: str) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(list(SIZES).index(split))  # one fixed set per split
    digits = rng.integers(0, 10, (SIZES[split], LENGTH), dtype=np.int32)
    answer = digits[:, ::-1]
    shifted = np.concatenate([np.full((len(digits), 1), START, np.int32), answer[:, :-1]], 1)
    return {"digits": digits, "answer_so_far": shifted}, np.ascontiguousarray(answer)


def batches(split: str, epoch: int):
    x, y = _examples(split)
    order = np.random.default_rng(epoch).permutation(len(y)) if split == "train" \
        else np.arange(len(y))
    for i in range(0, len(y), BATCH):
        rows = order[i:i + BATCH]
        yield {k: v[rows] for k, v in x.items()}, y[rows]
