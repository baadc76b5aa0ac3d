"""What an existing ``--out`` already holds, and the refusal to replace it by accident.

A run directory ``OUT/<label>/seed<k>/`` is *finished* when it holds ``result.json`` and *interrupted* when it
holds a checkpoint (``last/state.json``) but no result. ``OUT/results.json`` is the gathered table. Running
into an ``--out`` that holds any of them without ``--resume`` would replace them, so it is refused before any
work unless ``--overwrite`` says so explicitly.
"""
from __future__ import annotations

import re
from pathlib import Path

from fusionkit.cli import UsageError


def existing_runs(out: Path) -> tuple[list[str], list[str]]:
    """``(finished, interrupted)`` run directories under ``out``, relative to it (sorted)."""
    finished, interrupted = [], []
    if not out.is_dir():
        return finished, interrupted
    for seed_dir in sorted(p for p in out.glob("*/seed*") if p.is_dir()):
        rel = str(seed_dir.relative_to(out))
        if (seed_dir / "result.json").is_file():
            finished.append(rel)
        elif (seed_dir / "last" / "state.json").is_file():
            interrupted.append(rel)
    return finished, interrupted


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" … (+{len(items) - n})" if len(items) > n else "")


def check_overwrite(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse (``UsageError``) to run into ``out`` without ``--resume`` when it holds finished or interrupted
    runs or a results table, unless ``overwrite``; nothing is read beyond file names, nothing is written."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: --resume keeps the runs in --out, "
                         "--overwrite replaces them; pass one of them")
    if resume or overwrite:
        return
    finished, interrupted = existing_runs(out)
    table = (out / "results.json").is_file()
    if not (finished or interrupted or table):
        return
    what = []
    if finished:
        what.append(f"{len(finished)} finished run(s) ({_few(finished)})")
    if interrupted:
        what.append(f"{len(interrupted)} interrupted run(s) ({_few(interrupted)})")
    if table and not finished:
        what.append("a results table (results.json)")
    raise UsageError(f"--out {str(out)!r} already holds {' and '.join(what)}; nothing was changed. Rerun with "
                     f"--resume to keep them (and finish the rest), choose a new --out, or pass --overwrite to "
                     f"replace them")


def check_finished(run_dir: Path) -> dict:
    """A finished run that ``--resume`` reuses: its ``result.json`` against the schema, and its selected weights
    against their checksum (the exact copy in ``last/`` replaces damaged ones, said on stderr; otherwise one
    CheckpointError names the file). Returns the result."""
    import sys

    from fusionkit.schemas import check_result
    from fusionkit.training import integrity
    from fusionkit.training.checkpoint import read_json

    result = check_result(read_json(run_dir / "result.json"), run_dir / "result.json")
    best = run_dir / "best" / "model.safetensors"
    if best.exists() or (run_dir / "best").is_dir():
        integrity.verify_or_fallback(best, sorted((run_dir / "last").glob("model-*.safetensors")), [], restore=True,
                                     log=lambda m: print(f"[checkpoint] {m}", file=sys.stderr))
    return result


# temporary files of the atomic writers: ``.<name>.<8 random chars>.tmp`` (checkpoint.atomic_write_bytes) and
# ``.<name>.tmp.png`` (the training curve)
_ORPHAN = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp|\..+\.tmp\.png")


def remove_orphans(out: Path) -> list[Path]:
    """Delete the temporary files a killed process left under ``out`` (call only while holding its lock: no
    live writer can own them then); says how many on stderr."""
    import sys

    found = [p for p in out.rglob(".*") if p.is_file() and _ORPHAN.fullmatch(p.name)]
    for p in found:
        p.unlink(missing_ok=True)
    if found:
        print(f"[cleanup] removed {len(found)} temporary file(s) left by an interrupted process: "
              f"{_few([str(p.relative_to(out)) for p in found])}", file=sys.stderr)
    return found


def interrupted_message(error: BaseException) -> tuple[str, int]:
    """The one ``interrupted:`` line and the exit status (128 + the signal: 130 SIGINT, 143 SIGTERM)."""
    import signal

    what = getattr(error, "what", None)
    if what:  # a TrainingInterrupted: its place and checkpoint, without the Python API's resume hint
        checkpoint = getattr(error, "checkpoint", None)
        reason = what + (f"; checkpoint saved in {checkpoint}" if checkpoint is not None else "")
    else:
        reason = str(error).strip() or "stopped"
        reason = re.sub(r",? ?rerun with resume(=True)? to continue$", "", reason).rstrip("; ")
    return (f"interrupted: {reason}; rerun the same command with --resume to continue",
            128 + int(getattr(error, "signum", signal.SIGINT)))
