"""A full disk, handled in one place.

Every file fusionkit writes for a run goes through :func:`fusionkit.training.checkpoint.atomic_write_bytes`
(checkpoints, checksums, ``log.jsonl``, ``result.json``, ``test_predictions.csv``, ``run.json``, the results
table) or :func:`writing` (figures, study arrays). When the device is full (``ENOSPC``, or ``EDQUOT`` / ``EFBIG``
for a quota or file-size limit) the write removes its temporary file and raises :class:`DiskFullError`, which
names the file and the bytes it needed; the file it was replacing is untouched, so the run directory stays
resumable. The command-line tools turn it into one ``error:`` line (:func:`cli_message`) with exit status 1.
The data cache is optional: a full disk there is a warning, and the run goes on without it.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
EXIT_STATUS = 1


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing parent); ``None`` if unknown."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


class DiskFullError(OSError):
    """Writing ``path`` failed because its device is full (or a quota / file-size limit was hit)."""

    def __init__(self, path: str | os.PathLike, needed: int | None, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or os.strerror(cause.errno or errno.ENOSPC), str(path))
        self.path = Path(path)
        self.needed = needed
        self.free = free_bytes(path)
        self.cause = cause

    def __str__(self) -> str:
        need = f"{_size(self.needed)} needed" if self.needed is not None else "size needed unknown"
        free = f", {_size(self.free)} free" if self.free is not None else ""
        return f"no space left writing {self.path} ({need}{free}; {self.strerror})"


@contextmanager
def writing(path: str | os.PathLike, needed: int | None = None):
    """Turn a disk-full ``OSError`` raised inside the block into :class:`DiskFullError` for ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, needed, e) from None
        raise


def run_dir_of(path: Path) -> Path | None:
    """The run directory (``…/<label>/seed<k>``) a file belongs to, if any."""
    for parent in (path, *path.parents):
        if re.fullmatch(r"seed\d+", parent.name):
            return parent
    return None


def cli_message(error: OSError) -> str:
    """The one ``error:`` line of a disk-full failure: which file, how much space, which run to resume."""
    if not isinstance(error, DiskFullError):
        error = DiskFullError(error.filename or "?", None, error)
    run = run_dir_of(error.path)
    where = (f"the run in {run} keeps its last checkpoint and continues from it" if run is not None else
             "every finished run is kept")
    return (f"{error}. Nothing finished was lost and no temporary file was left: free space (or use another "
            f"--out), then rerun the same command with --resume; {where}")
