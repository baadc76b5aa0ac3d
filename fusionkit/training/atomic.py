"""Atomic file writes and the checkpoint error, below both :mod:`~fusionkit.training.checkpoint` and
:mod:`~fusionkit.training.integrity` (each imports them from here, so neither imports the other's module to
read, write or fail)."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


# -- atomic files ------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_NEW_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's temporary files are 0600


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it, then ``os.replace`` it into place."""
    from fusionkit.diskfull import writing

    path = Path(path)
    with writing(path, len(data)):  # a full disk: DiskFullError naming the file, the temporary file removed
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _NEW_FILE_MODE
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                os.fchmod(f.fileno(), mode)
                _write_all(f.fileno(), data)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_json(path: str | os.PathLike):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int too long, deep nesting
        raise CheckpointError(f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]}); the file is "
                              f"corrupt") from None
