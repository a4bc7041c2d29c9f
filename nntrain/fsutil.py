"""Atomic file writes: a reader (or a crash) sees the old version or the new, never half. And
the check that a path given to be read is a file or a folder, not a pipe or a device."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nntrain.errors import UserError


class DiskFull(UserError):
    """No space (or quota) left while writing a file; what was there before is kept."""


@contextlib.contextmanager
def disk_space(what: str, path: Path) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT while writing `path` into a DiskFull naming `what`, where, and the
    fix. Other OS errors pass through unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = Path(path).parent
        kept = "; the previous version of the file is kept" if Path(path).exists() else ""
        raise DiskFull(f"no space left on the device while writing {what} {path}",
                       f"free space on the disk that holds {where} (see `df -h {where}`)"
                       + kept) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    with disk_space("the file", path):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as e:  # a folder that is missing or not writable: name the file
            if e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(path)) from None
        try:
            os.fchmod(fd, _MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            if e.errno is None:
                raise
            # the error names the file asked for, not the temporary one beside it
            raise OSError(e.errno, e.strerror, str(path)) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an OS lock on `path`'s lock file (`.NAME.lock` beside it) while the file is read,
    changed and written, so that two processes (a training run and `nntrain evaluate`) never
    lose each other's change. Unguarded where no lock file can be made (a read-only run, whose
    write then says so) or the file system has no locks."""
    try:
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        fd = None
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def special_file(path: Path, pipes: bool = True) -> bool:
    """Whether `path` (through its links) is a device or a socket, or with `pipes` a pipe:
    /dev/zero never ends, and a FIFO that nothing writes to keeps its reader waiting."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False  # missing or unreadable: the reader says so
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or (stat.S_ISFIFO(mode) and not pipes))
