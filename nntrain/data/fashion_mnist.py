"""Fashion-MNIST, and any dataset shipped as four IDX files: find, download, verify, decode.

Each of a dataset's four files is looked up as plain `<file>`, then as `<file>.gz`, in:

1. the cache dir `<cache root>/<dataset>/`; the cache root is `$NNTRAIN_DATA` if set, else
   `~/.cache/nntrain`;
2. `<root>/<system_name>/` for each system root in `$NNTRAIN_SYSTEM_DATA_DIRS` (os.pathsep
   separated; default `/usr/share/datasets`, where Debian's `dataset-fashion-mnist` package
   installs `fashion-mnist/`; set it to the empty string to search no system dir).

A file found nowhere is downloaded into the cache dir from the dataset's mirrors, tried in
order; `$NNTRAIN_DATASET_MIRROR` (one base URL) replaces that list.

Every file is verified by the SHA-256 of its *decompressed* bytes: Debian recompresses the .gz
files, so their compressed digests differ from upstream while the contents are identical.
A verified compressed file also leaves its decompressed bytes in the cache dir: gunzipping the
training images took 0.2 s of every launch, reading the plain copy (verified again each time)
0.03 s.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.consoles import make_console
from nntrain.data.download import fetch, sha256_of
from nntrain.data.idx import parse_idx, read_bytes
from nntrain.errors import DataError
from nntrain.fsutil import DiskFull, atomic_write_bytes

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "FASHION_MNIST",
    "IdxDataset",
    "IdxFile",
    "cache_dir",
    "cache_root",
    "load",
    "load_dataset",
    "locate",
    "search_dirs",
]

DATA_ENV = "NNTRAIN_DATA"
SYSTEM_DIRS_ENV = "NNTRAIN_SYSTEM_DATA_DIRS"
MIRROR_ENV = "NNTRAIN_DATASET_MIRROR"
DEFAULT_SYSTEM_ROOTS = ("/usr/share/datasets",)


@dataclass(frozen=True)
class IdxFile:
    """One file of a dataset: its name without `.gz`, and the SHA-256 of its decompressed bytes."""

    stem: str
    sha256: str


@dataclass(frozen=True)
class IdxDataset:
    """A dataset stored as IDX images + labels for a train and a test split."""

    name: str  # also the cache subfolder
    class_names: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]  # base URLs, tried in order
    system_name: str | None = None  # subfolder of each system root, if a distro packages it
    apt_package: str | None = None  # Debian package that installs it there
    image_shape: tuple[int, ...] = (28, 28)

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


FASHION_MNIST = IdxDataset(
    name="fashion_mnist",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    system_name="fashion-mnist",
    apt_package="dataset-fashion-mnist",
)

CLASS_NAMES: tuple[str, ...] = FASHION_MNIST.class_names

# MNIST is not listed yet: its decompressed SHA-256 digests must come from verified real files.
DATASETS: dict[str, IdxDataset] = {FASHION_MNIST.name: FASHION_MNIST}

Split = tuple[np.ndarray, np.ndarray]


def cache_root() -> Path:
    """`$NNTRAIN_DATA` if set (and not empty), else `~/.cache/nntrain`."""
    root = os.environ.get(DATA_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "nntrain"


def cache_dir(dataset: IdxDataset) -> Path:
    """Where `dataset`'s files are looked up first and downloaded to."""
    return cache_root() / dataset.name


def search_dirs(dataset: IdxDataset) -> list[Path]:
    """The folders searched for `dataset`'s files, in order (see the module docstring)."""
    dirs = [cache_dir(dataset)]
    if dataset.system_name:
        env = os.environ.get(SYSTEM_DIRS_ENV)
        roots = DEFAULT_SYSTEM_ROOTS if env is None else env.split(os.pathsep)
        dirs += [Path(root) / dataset.system_name for root in roots if root]
    return dirs


def _mirrors(dataset: IdxDataset) -> tuple[str, ...]:
    override = os.environ.get(MIRROR_ENV)
    return (override,) if override else dataset.mirrors


def _find_local(file: IdxFile, dirs: list[Path],
                besides: frozenset[Path] = frozenset()) -> Path | None:
    """The first copy of `file` in `dirs`, other than those `besides`."""
    for folder in dirs:
        for name in (file.stem, file.stem + ".gz"):
            path = folder / name
            if path.is_file() and path not in besides:
                return path
    return None


def _download(dataset: IdxDataset, file: IdxFile, dirs: list[Path]) -> Path:
    dest = cache_dir(dataset) / (file.stem + ".gz")
    failures = []
    for base in _mirrors(dataset):
        url = base.rstrip("/") + "/" + file.stem + ".gz"
        try:
            return fetch(url, dest, file.sha256, decompressed_sha256=True)
        except DataError as e:  # try the next mirror; report all if none works
            failures.append(f"  {e.message}")
    places = ", ".join(str(d) for d in dirs)
    names = ", ".join(f.stem + ".gz" for f in dataset.files)
    install = (
        f"Run `apt-get install {dataset.apt_package}`, or put" if dataset.apt_package else "Put"
    )
    package = f" (Debian package {dataset.apt_package})" if dataset.apt_package else ""
    raise DataError(
        f"Dataset {dataset.name!r}{package}: {file.stem}(.gz) is not in {places}, "
        f"and downloading it failed:\n" + "\n".join(failures),
        f"{install} the four files ({names}; gzipped or not) in {cache_dir(dataset)}/, "
        f"or check the network connection.",
    )


def locate(dataset: IdxDataset) -> dict[str, Path]:
    """Path of each of `dataset`'s files (by stem), downloading missing ones into the cache."""
    dirs = search_dirs(dataset)
    found = {}
    for file in dataset.files:
        found[file.stem] = _find_local(file, dirs) or _download(dataset, file, dirs)
    return found


def _read_verified(dataset: IdxDataset, file: IdxFile, path: Path,
                   damaged: frozenset[Path] = frozenset()) -> np.ndarray:
    try:
        data = read_bytes(path)
        actual = sha256_of(data)
        problem = f"SHA-256 {actual[:12]}..."
    except DataError as e:  # not gzip data, or cut short
        if path.parent != cache_dir(dataset):
            raise
        data, actual, problem, unreadable = None, None, e.message, e
    if actual != file.sha256 and path.parent == cache_dir(dataset):
        # a damaged copy in the cache, where a good source is also at hand (the system's
        # package): read from that, and the cache's copy is written again from it
        other = _find_local(file, search_dirs(dataset), besides=damaged | {path})
        if other is not None:
            make_console(stderr=True).print(
                f"[yellow]warning:[/] {path} is damaged ({problem}); read from {other} "
                "instead, which replaces it", soft_wrap=True)
            images = _read_verified(dataset, file, other, damaged | {path})
            if other.name == file.stem:  # (a .gz source rewrites the cache's copy itself)
                _keep_decompressed(dataset, file, read_bytes(other))
            return images
        if data is None:
            raise unreadable
    if actual != file.sha256:
        if path.parent == cache_dir(dataset):
            fix = f"Delete {path}; it is downloaded again when missing."
        else:
            fix = f"Delete or replace {path} (or reinstall the package that provides it)."
        raise DataError(
            f"{path}: wrong contents for {dataset.name} {file.stem}: expected decompressed "
            f"SHA-256 {file.sha256}, got {actual}",
            fix,
        )
    if path.name != file.stem:
        _keep_decompressed(dataset, file, data)
    return parse_idx(data, str(path))


def _keep_decompressed(dataset: IdxDataset, file: IdxFile, data: bytes) -> None:
    """Leave the verified decompressed bytes in the cache dir, where the next load finds
    them first. Only a cache: a read-only or full disk goes without."""
    with contextlib.suppress(OSError, DiskFull):
        cache_dir(dataset).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_dir(dataset) / file.stem, data)


def load_dataset(dataset: IdxDataset) -> dict[str, Split]:
    """Load `dataset` as {"train": (x, y), "test": (x, y)}, x uint8 (n, *image_shape), y (n,)."""
    paths = locate(dataset)  # all four first: fail on a missing file before decoding anything
    out: dict[str, Split] = {}
    for split, images, labels in (
        ("train", dataset.train_images, dataset.train_labels),
        ("test", dataset.test_images, dataset.test_labels),
    ):
        x = _read_verified(dataset, images, paths[images.stem])
        y = _read_verified(dataset, labels, paths[labels.stem])
        # The digests pin the contents, so these only catch a wrong description in this module.
        if x.shape[1:] != dataset.image_shape or y.shape != x.shape[:1]:
            raise DataError(
                f"{dataset.name} {split}: images {x.shape} from {paths[images.stem]} and labels "
                f"{y.shape} from {paths[labels.stem]} do not match image shape "
                f"{dataset.image_shape}"
            )
        out[split] = (x, y)
    return out


def load(name: str = "fashion_mnist") -> dict[str, Split]:
    """Load a dataset listed in DATASETS by name (see `load_dataset`)."""
    dataset = DATASETS.get(name)
    if dataset is None:
        raise DataError(
            f"Unknown dataset {name!r}", f"Known IDX datasets: {', '.join(sorted(DATASETS))}."
        )
    return load_dataset(dataset)
