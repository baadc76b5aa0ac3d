"""``benchmarks.run --workers N``: the models × seeds grid over worker processes (and machines).

Each run directory ``OUT/<row>/seed<k>/`` is claimed by creating ``.claim`` exclusively (``O_CREAT|O_EXCL``, so
exactly one process wins, also on a shared filesystem); the claimant refreshes the file's time every
``heartbeat`` seconds while it trains. A run is finished when its ``result.json`` exists. A claim older than
``grace`` seconds belongs to a dead worker (SIGKILL, lost machine): it is moved aside (an atomic rename only one
process can do) and the run is taken over, continuing from its last checkpoint (``--resume``), so it is neither
lost nor run twice to completion. Workers run until every run of the grid is finished; then the process that
started them writes ``results.json`` and ``results.md`` from the run directories, exactly as a single process
would (each run depends on its settings and seed only; workers use one torch thread unless ``--threads``).

Started elsewhere with the same ``--out`` on a shared filesystem, ``python -m benchmarks.run … --grid-worker ID``
joins the same grid (docs/tuning.md: a SLURM array).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

CLAIM = ".claim"
RESULT = "result.json"


def add_arguments(p) -> None:
    p.add_argument("--grid-worker", type=int, default=None, metavar="ID",
                   help="run as worker ID of a models × seeds grid whose --out others share (no results files)")
    p.add_argument("--heartbeat", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--grace", type=float, default=60.0, help=argparse.SUPPRESS)


class Claim:
    """An exclusive claim on one run directory, kept alive by a heartbeat thread."""

    def __init__(self, path: Path, heartbeat: float) -> None:
        self.path, self.heartbeat = path, heartbeat
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)


def try_claim(run_dir: Path, *, heartbeat: float, grace: float, worker: int) -> tuple[Claim, bool] | None:
    """``(claim, took_over)`` when this process may run ``run_dir`` now, else ``None`` (finished, or claimed by a
    live worker). ``took_over``: the run belonged to a worker whose heartbeat stopped."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    took_over = False
    for _ in range(2):
        if (run_dir / RESULT).is_file():
            return None
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < grace:
                return None
            aside = run_dir / f"{CLAIM}.stale-{os.getpid()}-{time.time_ns()}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return None  # another worker took it over first
            if time.time() - aside.stat().st_mtime < grace:  # a fresh claim moved by a race: give it back
                os.rename(aside, path)
                return None
            took_over = True
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"worker": worker, "pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}, f)
        if (run_dir / RESULT).is_file():  # finished between the check and the claim
            path.unlink(missing_ok=True)
            return None
        return Claim(path, heartbeat), took_over
    return None


def work(tasks: list[tuple[str, int, Path]], run: Callable[[int, bool], None], *, heartbeat: float, grace: float,
         worker: int) -> int:
    """Run the ``tasks`` (label, seed, run directory) that no live worker holds, until all are finished;
    ``run(index, took_over)`` trains one. Returns the number of runs this worker trained."""
    done_here = 0
    started = time.perf_counter()
    while True:
        pending = [i for i, (_, _, d) in enumerate(tasks) if not (d / RESULT).is_file()]
        if not pending:
            return done_here
        progressed = False
        for i in pending:
            claimed = try_claim(tasks[i][2], heartbeat=heartbeat, grace=grace, worker=worker)
            if claimed is None:
                continue
            claim, took_over = claimed
            with claim:
                run(i, took_over)
            done_here += 1
            finished = sum((d / RESULT).is_file() for _, _, d in tasks)
            rate = (time.perf_counter() - started) / done_here
            print(f"[worker {worker}] {tasks[i][0]} seed {tasks[i][1]} done{' (taken over)' if took_over else ''} | "
                  f"{finished}/{len(tasks)} runs finished | ETA "
                  f"{_eta(rate * (len(tasks) - finished))}", file=sys.stderr, flush=True)
            progressed = True
            break
        if not progressed:
            time.sleep(min(1.0, heartbeat))


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def spawn(argv: list[str], workers: int, threads: int | None) -> list[int]:
    """Start ``workers`` copies of this ``benchmarks.run`` command as grid workers; wait; their exit codes."""
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "benchmarks.run", *argv, "--grid-worker", str(i), "--workers", "1",
               "--threads", str(threads or 1)]
        procs.append(subprocess.Popen(cmd))
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop(procs)
        raise


def run_workers(argv: list[str], workers: int, threads: int | None) -> None:
    """The parent's side of ``--workers N``: spawn the grid workers (``argv`` without ``--workers``) and wait.
    A worker stopped from outside (Ctrl-C, SIGTERM) stops the parent too (``KeyboardInterrupt``), so it does not
    train that worker's runs itself; any other failure is said, and the caller trains what is left."""
    codes = spawn(strip_worker_flags(argv), workers, threads)
    if any(c in (130, -signal.SIGINT, -signal.SIGTERM) for c in codes):
        raise KeyboardInterrupt
    if any(codes):
        print(f"[workers] exit codes {codes}: runs they left unfinished are trained now", file=sys.stderr)


def stop(procs, timeout: float = 30.0) -> None:
    """Terminate worker processes and wait for them (each saves or gives back its run or trial in flight); one
    that does not stop in ``timeout`` s is killed, and a second Ctrl-C kills them all at once."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    try:
        for p in procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
    except KeyboardInterrupt:
        for p in procs:
            p.kill()


def strip_worker_flags(argv: list[str]) -> list[str]:
    """``argv`` without ``--workers N`` / ``--workers=N`` (the spawned workers get their own)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--workers":
            skip = True
            continue
        if item.startswith("--workers="):
            continue
        out.append(item)
    return out
