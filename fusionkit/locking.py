"""One writer per output directory: a lock file in it (``OUT/.benchmarks.lock`` for ``benchmarks.run``,
``OUT/.extract.lock`` for ``fusionkit extract``) holds the writer's pid, start time and command.

The lock is an exclusive ``fcntl.flock`` on that file, so it is released by the kernel when its holder dies
(SIGKILL, a crash, a power cut of the process); the file's content only names the holder. A second process
finds the lock taken and gets :class:`LockHeld` at once (never waits); a lock file left behind by a dead
process is taken over with a warning. The holder removes the file when it finishes.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path


class LockHeld(RuntimeError):
    """Another live process writes to the directory."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _describe(holder: dict) -> str:
    started = holder.get("started")
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) \
            else "?"
    except (OverflowError, OSError, ValueError):  # a damaged lock file
        when = "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}: "
            f"{holder.get('command', '?')}")


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError, RecursionError):
        return {}
    return holder if isinstance(holder, dict) else {}  # another shape: a foreign or damaged lock file


def _held(path: Path, tool: str, holder: dict) -> LockHeld:
    return LockHeld(f"{path.parent} is in use by another {tool} ({_describe(holder)}); wait for it to finish or "
                    f"pass another --out")


def check_free(directory, *, name: str, tool: str) -> None:
    """Raise :class:`LockHeld` when a live process holds ``directory``'s lock file ``name`` (creates nothing);
    ``tool`` names the kind of writer in the message."""
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _held(path, tool, _read(fd)) from None
    finally:
        os.close(fd)


class DirectoryLock:
    """``with DirectoryLock(out, name=".x.lock", tool="x"): ...`` — hold ``out/<name>`` for the block (see the
    module doc); ``tool`` names the kind of writer in the message a second one gets."""

    def __init__(self, directory, command: list[str] | None = None, *, name: str, tool: str) -> None:
        self.path = Path(directory) / name
        self.tool = tool
        self.command = " ".join(command if command is not None else sys.argv)
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise _held(self.path, self.tool, holder) from None
            # the holder may have removed the file between our open and our lock: lock the current file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(fd)
        if previous and previous.get("pid") != os.getpid():
            try:
                alive = previous.get("pid") and _process_start(int(previous["pid"])) == previous.get("pid_start")
            except (TypeError, ValueError, OverflowError):  # a damaged lock file names no process
                alive = False
            state = "was interrupted" if not alive else "no longer holds it"
            warnings.warn(f"taking over the stale lock {self.path} of {_describe(previous)} (that process {state})",
                          RuntimeWarning, stacklevel=2)
        me = {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname(),
              "started": round(time.time(), 3), "command": self.command}
        from fusionkit.diskfull import writing

        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(me) + "\n").encode())
                os.fsync(fd)
        except BaseException:  # e.g. a full disk: the lock is not held, and the caller reports why
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while still locked: a waiter re-opens the new file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
