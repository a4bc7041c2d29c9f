"""Built-in datasets besides the IDX image sets: MNIST (Keras's mnist.npz), California
housing, iris and XOR. Each is found locally or downloaded once and verified by SHA-256."""

from __future__ import annotations

import io
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np

from nntrain.data.download import fetch, sha256_of
from nntrain.data.fashion_mnist import cache_root
from nntrain.data.tabular import Table, read_csv
from nntrain.errors import DataError

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# scikit-learn's mirror of the StatLib archive
HOUSING_URL = "https://ndownloader.figshare.com/files/5976036"
HOUSING_SHA256 = "aaa5c9a6afe2225cc2aed2723682ae403280c4a3695a2ddda4ffb5d8215ea681"
HOUSING_FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup",
                    "Latitude", "Longitude"]
HOUSING_TARGET = "MedHouseVal"
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


def _cached(name: str, filename: str, url: str, sha256: str, source: Path | None) -> Path:
    """`source` if given, else the cached copy, else a verified download into the cache."""
    if source is not None:
        return source
    path = cache_root() / name / filename
    if path.is_file():
        if sha256_of(path) != sha256:
            raise DataError(f"{path}: checksum mismatch", "delete it to download it again")
        return path
    try:
        return fetch(url, path, sha256)
    except DataError as e:
        raise DataError(
            f"dataset {name} is not on this machine and could not be downloaded: {e.message}",
            f"put {filename} in {path.parent}/, or point data.source at a local copy",
        ) from None


def load_mnist(source: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = _cached("mnist", "mnist.npz", MNIST_URL, MNIST_SHA256, source)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {"train": (f["x_train"], f["y_train"]), "test": (f["x_test"], f["y_test"])}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read MNIST from {path}: {e}",
                        "expected Keras's mnist.npz (x_train, y_train, x_test, y_test)") from None


RAW_HOUSING = ("longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
               "population", "households", "median_income", "median_house_value")


def load_california_housing(source: Path | None) -> Table:
    """The 8 features and the target (in $100,000) of scikit-learn's version, from the
    StatLib archive or from the handson-ml2 `housing.csv` (same rows, raw totals)."""
    local = source or next((p for p in (cache_root() / "california_housing" / "housing.csv",)
                            if p.is_file()), None)
    if local is not None and local.suffix == ".csv":
        derived = housing_features(read_csv(local))
        if HOUSING_TARGET not in derived.numeric:
            raise DataError(f"{local}: not the California housing CSV layout",
                            "expected handson-ml2's housing.csv columns")
        return derived
    path = _cached("california_housing", "cal_housing.tgz", HOUSING_URL, HOUSING_SHA256, local)
    return _derived(dict(zip(RAW_HOUSING, _read_statlib(path), strict=True)), str(path))


def housing_features(table: Table) -> Table:
    """Rows in handson-ml2's layout (raw totals; the target may be left out) as
    scikit-learn's features, as training derives them; any other table as it is."""
    if not all(k in table.numeric for k in RAW_HOUSING[:-1]):  # all but the target
        return table
    return _derived({k: table.numeric[k] for k in RAW_HOUSING if k in table.numeric},
                    table.source)


def _derived(raw: dict[str, np.ndarray], origin: str) -> Table:
    households = raw["households"]
    numeric = {
        "MedInc": raw["median_income"], "HouseAge": raw["housing_median_age"],
        "AveRooms": raw["total_rooms"] / households,
        "AveBedrms": raw["total_bedrooms"] / households, "Population": raw["population"],
        "AveOccup": raw["population"] / households, "Latitude": raw["latitude"],
        "Longitude": raw["longitude"],
    }
    if "median_house_value" in raw:
        numeric[HOUSING_TARGET] = raw["median_house_value"] / 100_000
    numeric = {k: v.astype(np.float32) for k, v in numeric.items()}
    return Table(list(numeric), numeric, {}, origin)


def _read_statlib(path: Path) -> list[np.ndarray]:
    try:
        with tarfile.open(path, "r:gz") as archive:  # read one member; nothing is extracted
            member = next(m for m in archive.getmembers() if m.name.endswith("cal_housing.data"))
            data = archive.extractfile(member).read().decode()
        values = np.loadtxt(io.StringIO(data), delimiter=",", dtype=np.float64)
    except (OSError, tarfile.TarError, StopIteration, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}", "delete it to download it again") from None
    return [values[:, i] for i in range(9)]


def load_iris() -> Table:
    """Fisher's iris (150 rows, shipped with nntrain): four measurements in cm, `species`
    0-2, and 0/1 indicator columns `is_setosa`, `is_versicolor`, `is_virginica`."""
    with resources.as_file(resources.files("nntrain.data") / "iris.csv") as path:
        table = read_csv(path)
    species = table.numeric["species"]
    for i, name in enumerate(IRIS_CLASSES):
        table.numeric[f"is_{name}"] = (species == i).astype(np.float32)
        table.names.append(f"is_{name}")
    table.source = "iris"
    return table


def load_xor() -> Table:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    numeric = {"x1": x[:, 0], "x2": x[:, 1], "y": np.logical_xor(x[:, 0], x[:, 1])
               .astype(np.float32)}
    return Table(list(numeric), numeric, {}, "xor")


TABULAR_TARGETS = {"california_housing": [HOUSING_TARGET], "iris": ["species"], "xor": ["y"]}
TABULAR_EXCLUDE = {"iris": ["is_setosa", "is_versicolor", "is_virginica"]}
