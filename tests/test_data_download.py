"""Downloading, IDX decoding and dataset lookup, against a local HTTP server (no internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nntrain.data import fashion_mnist as fm
from nntrain.data.download import fetch, sha256_of
from nntrain.data.idx import parse_idx, read_idx
from nntrain.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _ShortHandler(_QuietHandler):
    """Promises 1000 bytes, sends 10, hangs up: a download cut off mid-way."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.close_connection = True


class _Server:
    def __init__(self, root: Path, handler: type = _QuietHandler) -> None:
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    """serve(folder) -> base URL of an HTTP server for that folder; all stopped at the end."""
    servers: list[_Server] = []

    def start(root: Path, handler: type = _QuietHandler) -> _Server:
        servers.append(_Server(root, handler))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dead_url() -> str:
    """A URL on a port nobody listens on: connection refused at once (no network needed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dead_url: str) -> Path:
    """Empty cache, no system dirs, an unreachable mirror; returns the cache root."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NNTRAIN_DATA", str(root))
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", "")
    monkeypatch.setenv("NNTRAIN_DATASET_MIRROR", dead_url)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# --- download ---------------------------------------------------------------------------------


def test_sha256_of_bytes_and_paths(tmp_path: Path) -> None:
    raw = b"hello idx" * 1000
    packed = gzip.compress(raw)
    (tmp_path / "f.gz").write_bytes(packed)
    assert sha256_of(raw) == hashlib.sha256(raw).hexdigest()
    assert sha256_of(tmp_path / "f.gz") == hashlib.sha256(packed).hexdigest()
    assert sha256_of(str(tmp_path / "f.gz"), gunzip=True) == sha256_of(raw)
    assert sha256_of(packed, gunzip=True) == sha256_of(raw)
    with pytest.raises(DataError, match="missing"):
        sha256_of(tmp_path / "missing")


def test_fetch_downloads_verifies_and_places(tmp_path: Path, serve) -> None:
    images = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
    raw = idx_bytes(images)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "imgs.gz").write_bytes(gzip.compress(raw))
    server = serve(tmp_path / "srv")
    dest = tmp_path / "out" / "sub" / "imgs.gz"  # missing folders are created

    got = fetch(server.url + "imgs.gz", dest, sha256_of(raw), decompressed_sha256=True)

    assert got == dest
    np.testing.assert_array_equal(read_idx(dest), images)
    assert leftovers(dest.parent) == []
    # A digest of the compressed bytes works too, and replaces an existing file.
    packed = (tmp_path / "srv" / "imgs.gz").read_bytes()
    fetch(server.url + "imgs.gz", dest, hashlib.sha256(packed).hexdigest().upper())
    assert dest.read_bytes() == packed


def test_fetch_wrong_checksum_leaves_nothing(tmp_path: Path, serve) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.gz").write_bytes(gzip.compress(b"contents"))
    server = serve(tmp_path / "srv")
    dest = tmp_path / "out" / "a.gz"
    wrong = "0" * 64

    with pytest.raises(DataError) as info:
        fetch(server.url + "a.gz", dest, wrong, decompressed_sha256=True)

    message = info.value.message
    assert server.url + "a.gz" in message
    assert wrong in message
    assert sha256_of(b"contents") in message
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_fetch_not_gzip_when_decompressed_digest_expected(tmp_path: Path, serve) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.gz").write_bytes(b"<html>not found page</html>")
    server = serve(tmp_path / "srv")
    with pytest.raises(DataError, match="not valid gzip") as info:
        fetch(server.url + "a.gz", tmp_path / "a.gz", "0" * 64, decompressed_sha256=True)
    assert server.url + "a.gz" in info.value.message
    assert list(tmp_path.glob("*a.gz*")) == []


def test_fetch_http_error_names_url(tmp_path: Path, serve) -> None:
    (tmp_path / "srv").mkdir()
    server = serve(tmp_path / "srv")
    url = server.url + "nope.gz"
    with pytest.raises(DataError, match="404") as info:
        fetch(url, tmp_path / "out" / "nope.gz")
    assert url in info.value.message
    assert info.value.hint
    assert list((tmp_path / "out").iterdir()) == []


def test_fetch_connection_refused_names_url(tmp_path: Path, dead_url: str) -> None:
    with pytest.raises(DataError) as info:
        fetch(dead_url + "x.gz", tmp_path / "x.gz", timeout=5)
    assert dead_url + "x.gz" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_fetch_cut_off_download(tmp_path: Path, serve) -> None:
    server = serve(tmp_path, _ShortHandler)
    with pytest.raises(DataError, match="10 of 1000 bytes"):
        fetch(server.url + "x.gz", tmp_path / "out" / "x.gz", timeout=5)
    assert list((tmp_path / "out").iterdir()) == []


# --- IDX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, compress: bool) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    data = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.flags.writeable
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX type"),
        (lambda b: gzip.compress(b)[:-20], "damaged gzip"),
        (lambda b: b"", "bad magic"),
    ],
)
def test_read_idx_damaged_names_file(tmp_path: Path, damage, expected: str) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(idx_bytes(np.zeros((4, 28, 28), np.uint8))))
    with pytest.raises(DataError, match=expected) as info:
        read_idx(path)
    assert str(path) in info.value.message
    assert info.value.hint


def test_parse_idx_bytes() -> None:
    labels = np.array([9, 0, 3], np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels)), labels)


# --- dataset lookup, on a tiny made-up dataset ------------------------------------------------


def tiny_dataset(folder: Path, *, compress: bool = True) -> fm.IdxDataset:
    """Write a 4-file IDX dataset (3 train, 2 test images of 2x3) and describe it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (3, 2, 3), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2], np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 0], np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for stem, array in arrays.items():
        data = idx_bytes(array)
        name, content = (stem + ".gz", gzip.compress(data)) if compress else (stem, data)
        (folder / name).write_bytes(content)
        files.append(fm.IdxFile(stem, sha256_of(data)))
    return fm.IdxDataset(
        name="tiny",
        class_names=("a", "b", "c"),
        train_images=files[0],
        train_labels=files[1],
        test_images=files[2],
        test_labels=files[3],
        mirrors=("http://127.0.0.1:9/unused/",),
        system_name="tiny-sys",
        image_shape=(2, 3),
    )


def test_tiny_dataset_download_then_cache(tmp_path: Path, isolated: Path, serve, monkeypatch):
    dataset = tiny_dataset(tmp_path / "srv")
    server = serve(tmp_path / "srv")
    monkeypatch.setenv("NNTRAIN_DATASET_MIRROR", server.url.rstrip("/"))

    first = fm.load_dataset(dataset)
    server.stop()
    second = fm.load_dataset(dataset)

    assert first["train"][0].shape == (3, 2, 3) and first["test"][1].tolist() == [2, 0]
    # the downloads, and their decompressed bytes (read first from then on)
    assert sorted(p.name for p in (isolated / "tiny").iterdir()) == sorted(
        name for f in dataset.files for name in (f.stem, f.stem + ".gz")
    )
    for f in dataset.files:
        assert sha256_of(isolated / "tiny" / f.stem) == f.sha256
    assert all(p.suffix != ".gz" for p in fm.locate(dataset).values())
    for split in ("train", "test"):
        for a, b in zip(first[split], second[split], strict=True):
            np.testing.assert_array_equal(a, b)


def test_compressed_system_files_leave_a_plain_copy_in_the_cache(tmp_path: Path, isolated,
                                                                 monkeypatch, capsys):
    dataset = tiny_dataset(tmp_path / "sys" / "tiny-sys")
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", str(tmp_path / "sys"))
    first = fm.load_dataset(dataset)
    assert sorted(p.name for p in (isolated / "tiny").iterdir()) == sorted(
        f.stem for f in dataset.files)
    # the copy is verified like any file: a damaged one is never used, but made again from
    # its source, and said so
    bad = isolated / "tiny" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(idx_bytes(np.array([1, 1], np.uint8)))
    np.testing.assert_array_equal(fm.load_dataset(dataset)["test"][1], first["test"][1])
    assert "is damaged" in capsys.readouterr().err
    assert sha256_of(bad) == dataset.test_labels.sha256
    shutil.rmtree(tmp_path / "sys")  # from now on the cache alone serves
    second = fm.load_dataset(dataset)
    np.testing.assert_array_equal(first["train"][0], second["train"][0])
    bad.write_bytes(idx_bytes(np.array([1, 1], np.uint8)))  # with no source left: named
    with pytest.raises(DataError, match="wrong contents") as info:
        fm.load_dataset(dataset)
    assert str(bad) in info.value.message


def test_a_damaged_gzip_in_the_cache_is_read_from_the_system_copy_instead(
        tmp_path: Path, isolated, monkeypatch, capsys):
    dataset = tiny_dataset(tmp_path / "sys" / "tiny-sys")
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", str(tmp_path / "sys"))
    (isolated / "tiny").mkdir(parents=True)
    bad = isolated / "tiny" / "train-images-idx3-ubyte.gz"  # a download cut short, say
    bad.write_bytes(gzip.compress(b"x" * 100)[:-12])
    assert fm.load_dataset(dataset)["train"][0].shape == (3, 2, 3)
    assert f"{bad} is damaged" in " ".join(capsys.readouterr().err.split())
    assert sha256_of(isolated / "tiny" / "train-images-idx3-ubyte") == \
        dataset.train_images.sha256  # the next load reads the good copy first


def test_a_read_only_cache_only_costs_the_copy(tmp_path: Path, isolated, monkeypatch):
    dataset = tiny_dataset(tmp_path / "sys" / "tiny-sys")
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", str(tmp_path / "sys"))

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fm, "atomic_write_bytes", refuse)
    assert fm.load_dataset(dataset)["train"][1].tolist() == [0, 1, 2]


def test_tiny_dataset_from_system_dir_plain_files(tmp_path: Path, isolated, monkeypatch):
    dataset = tiny_dataset(tmp_path / "sys" / "tiny-sys", compress=False)
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", f"{tmp_path / 'nowhere'}:{tmp_path / 'sys'}")
    paths = fm.locate(dataset)
    assert all(p.parent == tmp_path / "sys" / "tiny-sys" for p in paths.values())
    assert fm.load_dataset(dataset)["train"][1].tolist() == [0, 1, 2]
    assert not (isolated / "tiny").exists()  # nothing downloaded or copied


def test_cache_dir_comes_before_system_dirs(tmp_path: Path, isolated, monkeypatch):
    dataset = tiny_dataset(isolated / "tiny")
    tiny_dataset(tmp_path / "sys" / "tiny-sys")
    monkeypatch.setenv("NNTRAIN_SYSTEM_DATA_DIRS", str(tmp_path / "sys"))
    assert all(p.parent == isolated / "tiny" for p in fm.locate(dataset).values())


def test_cache_root_defaults_to_home_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fm.cache_dir(fm.FASHION_MNIST) == tmp_path / ".cache" / "nntrain" / "fashion_mnist"
    monkeypatch.delenv("NNTRAIN_SYSTEM_DATA_DIRS", raising=False)
    assert fm.search_dirs(fm.FASHION_MNIST)[1:] == [DEBIAN_DIR]


def test_local_file_with_wrong_checksum(tmp_path: Path, isolated: Path) -> None:
    dataset = tiny_dataset(isolated / "tiny")
    bad = isolated / "tiny" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.array([1, 1], np.uint8))))
    with pytest.raises(DataError) as info:
        fm.load_dataset(dataset)
    message = info.value.message
    assert str(bad) in message
    assert dataset.test_labels.sha256 in message
    assert sha256_of(bad, gunzip=True) in message
    assert "Delete" in info.value.hint


def test_damaged_local_file_names_it(tmp_path: Path, isolated: Path) -> None:
    dataset = tiny_dataset(isolated / "tiny")
    bad = isolated / "tiny" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-12])
    with pytest.raises(DataError, match="damaged gzip") as info:
        fm.load_dataset(dataset)
    assert str(bad) in info.value.message


# --- Fashion-MNIST ----------------------------------------------------------------------------


def test_no_source_says_what_to_install(isolated: Path, dead_url: str) -> None:
    with pytest.raises(DataError) as info:
        fm.load("fashion_mnist")
    error = info.value
    assert "fashion_mnist" in error.message
    assert "dataset-fashion-mnist" in error.message
    assert str(isolated / "fashion_mnist") in error.message  # where it looked
    assert dead_url in error.message  # what it tried
    assert "apt-get install dataset-fashion-mnist" in error.hint
    assert str(isolated / "fashion_mnist") in error.hint
    assert not list((isolated / "fashion_mnist").glob("*"))


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="Unknown dataset 'nope'") as info:
        fm.load("nope")
    assert "fashion_mnist" in info.value.hint


def test_fashion_mnist_download_then_cache(isolated: Path, serve, monkeypatch) -> None:
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"{DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)")
    server = serve(DEBIAN_DIR)
    monkeypatch.setenv("NNTRAIN_DATASET_MIRROR", server.url)

    data = fm.load()
    server.stop()  # the second load must not need it
    again = fm.load("fashion_mnist")

    for loaded in (data, again):
        (x_train, y_train), (x_test, y_test) = loaded["train"], loaded["test"]
        assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
        assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
        assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
        assert y_test[0] == 9 and fm.CLASS_NAMES[y_test[0]] == "Ankle boot"
        assert set(np.unique(y_train).tolist()) == set(range(10))
    assert len(list((isolated / "fashion_mnist").glob("*.gz"))) == 4
    assert len(list((isolated / "fashion_mnist").glob("*-ubyte"))) == 4  # decompressed copies
