"""Activations by name against NumPy, through the `activation` layer; MNIST's loader."""

from __future__ import annotations

import http.server
import io
import threading
from math import erf
from pathlib import Path

import jax
import numpy as np
import pytest

from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.data import builtin
from nntrain.data.download import sha256_of
from nntrain.errors import DataError

X = np.linspace(-4, 4, 17, dtype=np.float32).reshape(1, 17)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


REFERENCES = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2))),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "relu6": lambda x: np.clip(x, 0, 6),
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "exponential": np.exp,
    # Keras 3's formulas (keras/src/activations/activations.py) at their default arguments
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "celu": lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(x)),
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0),
    "squareplus": lambda x: (x + np.sqrt(x * x + 4)) / 2,
    "sparse_plus": lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    "sparse_sigmoid": lambda x: np.clip((x + 1) / 2, 0, 1),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_layer_matches_numpy(tmp_path: Path, name: str):
    config = tmp_path / "a.yaml"
    config.write_text(f"""
name: act
data: {{dataset: synthetic}}
model:
  input: [17]
  layers:
    - activation: {name}
compile: {{loss: mse}}
""")
    setup = prepare(load_config(config))
    params, state = setup.model.init(jax.random.key(0))
    outputs, _, _ = setup.model.apply(params, state, {"input": X})
    np.testing.assert_allclose(np.asarray(outputs["activation"]), REFERENCES[name](X),
                               rtol=1e-5, atol=1e-6)


def _mnist_npz() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
             y_train=np.arange(6, dtype=np.uint8), x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.array([7, 2], np.uint8))
    return buffer.getvalue()


def test_mnist_downloads_once_verifies_and_loads(tmp_path: Path, monkeypatch):
    payload = _mnist_npz()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "MNIST_URL", f"http://127.0.0.1:{server.server_port}/mnist.npz")
    try:
        monkeypatch.setattr(builtin, "MNIST_SHA256", "0" * 64)
        with pytest.raises(DataError, match="mnist"):
            builtin.load_mnist(None)
        assert not (tmp_path / "cache" / "mnist" / "mnist.npz").exists()

        monkeypatch.setattr(builtin, "MNIST_SHA256", sha256_of(payload))
        splits = builtin.load_mnist(None)
    finally:
        server.shutdown()
    assert splits["train"][0].shape == (6, 28, 28) and splits["test"][1].tolist() == [7, 2]
    again = builtin.load_mnist(None)  # from the cache: the server is gone
    assert again["train"][1].tolist() == list(range(6))
