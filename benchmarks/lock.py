"""``benchmarks.run``'s one writer per ``--out``: ``OUT/.benchmarks.lock`` (:mod:`fusionkit.locking`)."""
from __future__ import annotations

from fusionkit.locking import DirectoryLock as _DirectoryLock
from fusionkit.locking import LockHeld
from fusionkit.locking import check_free as _check_free

__all__ = ["LOCK_NAME", "DirectoryLock", "LockHeld", "check_free"]

LOCK_NAME = ".benchmarks.lock"
TOOL = "benchmarks.run"


class DirectoryLock(_DirectoryLock):
    """``with DirectoryLock(out): ...`` — hold ``out/.benchmarks.lock`` for the block."""

    def __init__(self, directory, command: list[str] | None = None) -> None:
        super().__init__(directory, command, name=LOCK_NAME, tool=TOOL)


def check_free(directory) -> None:
    """Raise :class:`LockHeld` when a live ``benchmarks.run`` holds ``directory`` (creates nothing)."""
    _check_free(directory, name=LOCK_NAME, tool=TOOL)
