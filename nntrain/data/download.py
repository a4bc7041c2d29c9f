"""Download a file safely: into a temporary file beside its destination, verify, then rename.

A partial or corrupt download never appears under the final name (os.replace is atomic on one
file system), so concurrent runs and interrupted runs cannot leave a half-written file behind
for a later run to trip over.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import secrets
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Protocol

from nntrain.errors import DataError

__all__ = ["fetch", "sha256_of"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "nntrain/0.1 (python urllib)"
# What gzip raises on damaged input (BadGzipFile is an OSError, so catch these first).
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)

BytesOrPath = bytes | bytearray | memoryview | str | os.PathLike[str]


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _hash_stream(stream: _Readable) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _hash_file(path: Path, gunzip: bool) -> str:
    """SHA-256 of a file, streamed; raises the raw gzip/OS errors for the caller to word."""
    with open(path, "rb") as raw:
        if not gunzip:
            return _hash_stream(raw)
        with gzip.GzipFile(fileobj=raw) as unzipped:
            return _hash_stream(unzipped)


def sha256_of(src: BytesOrPath, *, gunzip: bool = False) -> str:
    """Hex SHA-256 of `src`: bytes, or the contents of a file (a `str` is taken as a path).

    With `gunzip=True` the digest is of the gzip-decompressed contents.
    Raises DataError if the file cannot be read or is not valid gzip.
    """
    if isinstance(src, bytes | bytearray | memoryview):
        try:
            data = gzip.decompress(src) if gunzip else src
        except _GZIP_ERRORS as e:
            raise DataError(f"Data is not valid gzip: {e}") from e
        return hashlib.sha256(data).hexdigest()
    path = Path(src)
    try:
        return _hash_file(path, gunzip)
    except _GZIP_ERRORS as e:
        raise DataError(f"{path}: not valid gzip data ({e})") from e
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e.strerror or e}") from e


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    decompressed_sha256: bool = False,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest` and return `dest` as a Path.

    If `sha256` is given, the download must match it, else nothing is written and DataError is
    raised naming the URL and both digests. With `decompressed_sha256=True` the digest is of the
    gunzipped bytes (useful when mirrors recompress the same contents). Network and HTTP errors
    raise DataError naming the URL. `timeout` is per socket operation, in seconds.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"Cannot create folder {dest.parent} for the download of {url}: {e.strerror or e}"
        ) from e
    # Same folder as dest, so os.replace() is a rename on one file system, never a copy.
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
    try:
        _download(url, tmp, timeout)
        if sha256 is not None:
            _verify(url, tmp, sha256, decompressed_sha256)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace
    return dest


def _download(url: str, tmp: Path, timeout: float) -> None:
    log.info("downloading %s", url)
    try:
        out = open(tmp, "xb")  # noqa: SIM115 - closed below; opened first to tell local errors apart
    except OSError as e:
        raise DataError(f"Cannot write {tmp} for the download of {url}: {e.strerror or e}") from e
    hint = "Check the network connection, the URL and any proxy settings (https_proxy)."
    with out:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                expected = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
        except urllib.error.HTTPError as e:
            raise DataError(f"Download of {url} failed: HTTP {e.code} {e.reason}", hint) from e
        except urllib.error.URLError as e:
            raise DataError(f"Download of {url} failed: {e.reason}", hint) from e
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise DataError(f"Download of {url} failed: {e}", hint) from e
        # http.client does not raise when the connection closes early; check the length here.
        if expected is not None and expected.isdigit() and received != int(expected):
            raise DataError(f"Download of {url} failed: got {received} of {expected} bytes", hint)
        out.flush()
        os.fsync(out.fileno())


def _verify(url: str, tmp: Path, expected: str, gunzip: bool) -> None:
    what = "decompressed SHA-256" if gunzip else "SHA-256"
    try:
        actual = _hash_file(tmp, gunzip)
    except _GZIP_ERRORS as e:
        raise DataError(
            f"Download of {url} is not valid gzip data ({e}); expected {what} {expected}"
        ) from e
    if actual != expected.lower():
        raise DataError(
            f"Checksum mismatch for {url}: expected {what} {expected}, got {actual}",
            "The server sent different contents; try again later or use another mirror.",
        )
