"""Checksums for every file of a checkpoint, and the one exact fallback between ``best/`` and ``last/``.

Every checkpoint file ``F`` (``best/model.safetensors``, ``best/model.json``, ``last/state.json``,
``last/model-<n>.safetensors``, ``last/optim-<n>.safetensors``) has a sidecar ``F.sha256``::

    {"file": "model.safetensors", "versions": [{"sha256": "…", "size": 123}]}

written atomically. A file that is replaced in place is written in three atomic steps: the sidecar accepting
the old *and* the new content, the file, the sidecar accepting only the new content; so a process killed at
any point leaves a file that its sidecar accepts, and a file that was damaged afterwards is always refused.

Verification (on ``resume`` and in :func:`fusionkit.load`) hashes the file and compares it with its sidecar.
A checkpoint directory without any sidecar was written before checksums existed: it is read with a warning.

Exact fallback. ``last/state.json`` records the sha256 of ``best/model.safetensors`` and of the model weights
it names. When one weight file fails its check, the *other* checkpoint's weight file replaces it only when its
own check passes and its sha256 equals the sha256 recorded for the damaged file (in the damaged file's sidecar
or in ``state.json``): byte-identical files, so the same epoch, step and weights. That is the case after an
epoch that improved the validation metric (``best/`` and ``last/`` were saved from the same state). Anything
else is refused with one :class:`~fusionkit.training.checkpoint.CheckpointError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike) -> list[dict]:
    """The versions ``[{"sha256", "size"}]`` the sidecar of ``path`` accepts (schema-checked)."""
    from fusionkit.schemas import SIDECAR, load_checked

    doc = load_checked(sidecar(path), SIDECAR)
    if doc["file"] != Path(path).name:
        from fusionkit.training.atomic import CheckpointError

        raise CheckpointError(f"{sidecar(path)}: key 'file' names {doc['file']!r}, not {Path(path).name!r}; the "
                              f"checksum file is corrupt")
    return doc["versions"]


def _write_sidecar(path: Path, versions: list[dict]) -> None:
    from fusionkit.training.atomic import atomic_write_bytes

    doc = {"file": path.name, "versions": versions}
    atomic_write_bytes(sidecar(path), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def write_checked(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically with its checksum sidecar (three atomic steps, see the module
    docstring); returns the sha256."""
    from fusionkit.training.atomic import CheckpointError, atomic_write_bytes

    path = Path(path)
    new = {"sha256": sha256_bytes(data), "size": len(data)}
    old: list[dict] = []
    if path.is_file() and sidecar(path).is_file():
        try:
            old = [v for v in read_sidecar(path) if v != new][-1:]
        except CheckpointError:
            old = []
    if old:
        _write_sidecar(path, old + [new])
    atomic_write_bytes(path, data)
    _write_sidecar(path, [new])
    return new["sha256"]


def remove_checked(path: str | os.PathLike) -> None:
    """Delete a checkpoint file and its sidecar (the file first: a sidecar never outlives it unnoticed)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def _legacy(directory: Path) -> bool:
    """A checkpoint directory written before checksums existed: no sidecar at all."""
    return not any(p.name.endswith(SIDECAR_SUFFIX) for p in directory.iterdir()) if directory.is_dir() else True


def problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` fails its check (``None`` when it passes)."""
    from fusionkit.training.atomic import CheckpointError

    path = Path(path)
    if not path.is_file():
        return "it is missing"
    if not sidecar(path).is_file():
        if _legacy(path.parent):
            return None
        return f"its checksum file {sidecar(path).name} is missing"
    try:
        versions = read_sidecar(path)
    except CheckpointError as e:
        return str(e)
    size = path.stat().st_size
    if not any(v["size"] == size for v in versions):
        return f"its size {size} bytes differs from the {versions[-1]['size']} bytes recorded in {sidecar(path).name}"
    digest = sha256_file(path)
    if not any(v["sha256"] == digest for v in versions):
        return f"its sha256 {digest[:12]}… differs from the one recorded in {sidecar(path).name}"
    return None


_warned: set = set()


def verify(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when it fails its checksum."""
    from fusionkit.training.atomic import CheckpointError

    path = Path(path)
    why = problem(path)
    if why is not None:
        raise CheckpointError(f"checkpoint file {str(path)!r} is damaged: {why}. It cannot be trusted; restore it "
                              f"from a copy or retrain this run (delete its directory, or use a new --out)")
    if not sidecar(path).is_file() and str(path.parent) not in _warned:
        _warned.add(str(path.parent))
        warnings.warn(f"{path.parent} has no checksum files (written by an older fusionkit): read unverified",
                      UserWarning, stacklevel=3)


def recorded(path: str | os.PathLike) -> set[str]:
    """The sha256 values the (possibly damaged) file's sidecar records, if the sidecar is readable."""
    from fusionkit.training.atomic import CheckpointError

    try:
        return {v["sha256"] for v in read_sidecar(path)}
    except (CheckpointError, OSError):
        return set()


def verify_or_fallback(path: str | os.PathLike, alternatives: Iterable[str | os.PathLike], expected: Iterable[str],
                       *, restore: bool, log: Callable[[str], None]) -> Path:
    """``path`` when it passes its check; else the first alternative that passes and is byte-identical to what
    ``path`` should hold (its sha256 is in ``expected`` — the record in ``state.json`` — or, without one, in
    ``path``'s sidecar). With ``restore`` the
    alternative's bytes are written back to ``path`` (checked) and ``path`` is returned; otherwise the
    alternative is returned for reading. Each fallback is reported through ``log``. Nothing exact: the
    :class:`CheckpointError` of ``path``."""
    from fusionkit.training.atomic import CheckpointError

    path = Path(path)
    try:
        verify(path)
        return path
    except CheckpointError as error:
        # what the file must hold: the checkpoint's own record (state.json) when there is one, else its sidecar
        wanted = {e for e in expected if e} or recorded(path)
        for alt in alternatives:
            alt = Path(alt)
            if not alt.is_file() or not sidecar(alt).is_file() or problem(alt) is not None:
                continue
            digest = sha256_file(alt)
            if digest not in wanted:
                continue
            log(f"{path} failed its checksum; {alt} holds exactly the same weights (sha256 {digest[:12]}…)"
                + (", restored from it" if restore else ", loaded from it"))
            if restore:
                write_checked(path, alt.read_bytes())
                return path
            return alt
        raise error from None
