"""Settings for the whole test suite."""

import os

# By JAX's default a GPU computes float32 matrix products in TF32 and a TPU in bfloat16
# passes; the tests compare numbers with float32 references, so they ask for full float32.
# Child processes inherit it. A CPU computes the same programs either way.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
