"""On-disk cache of tokenized splits: one ``.npz`` (``allow_pickle=False``) per key, written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

CACHE_FORMAT = 1
_FIELDS = ("input_ids", "token_offsets", "acoustic", "acoustic_offsets", "visual", "visual_offsets", "labels", "ids")


def cache_dir() -> Path:
    """``FUSIONKIT_CACHE`` or ``~/.cache/fusionkit``."""
    env = os.environ.get("FUSIONKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fusionkit"


def cache_key(**parts) -> str:
    payload = json.dumps({"cache_format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    name = str(parts.get("name", "data")).replace("/", "_")
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


def path_for(key: str) -> Path:
    return cache_dir() / f"{key}.npz"


def save(key: str, loaded) -> Path | None:
    """Write ``loaded`` (a :class:`LoadedData`) under ``key``; a cache that cannot be written only warns."""
    arrays = {}
    meta = {"info": {}, "splits": {}}
    for split, ds in loaded.splits.items():
        for name, arr in ds.arrays().items():
            arrays[f"{split}/{name}"] = arr
        meta["splits"][split] = {"aligned": ds.aligned, "max_seq_length": ds.max_seq_length,
                                 "pad_token_id": ds.pad_token_id, "name": ds.name}
    info = loaded.info
    meta["info"] = {"name": info.name, "format": info.format, "d_acoustic": info.d_acoustic,
                    "d_visual": info.d_visual, "simulated": info.simulated, "description": info.description,
                    "report": info.report.to_dict(), "aligned": info.aligned, "sources": info.sources,
                    "channels": info.channels, "feature_names": info.feature_names}
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    target = path_for(key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        from fusionkit.diskfull import DiskFullError, is_disk_full

        if is_disk_full(exc):  # the cache is optional: said once, and the run goes on without it
            exc = DiskFullError(target, None, exc)
        warnings.warn(f"could not write the data cache {target}: {exc}; continuing without it", stacklevel=2)
        return None
    return target


def load(key: str):
    """The cached :class:`LoadedData` for ``key``, or ``None`` (missing, or corrupt: warns and returns None)."""
    from fusionkit.data.dataset import DatasetInfo, LoadedData, MultimodalDataset
    from fusionkit.data.errors import LoadReport

    path = path_for(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["__meta__"]))
            splits = {}
            for split, m in meta["splits"].items():
                arrs = {name: npz[f"{split}/{name}"] for name in _FIELDS}
                splits[split] = MultimodalDataset(
                    input_ids=arrs["input_ids"], token_offsets=arrs["token_offsets"], acoustic=arrs["acoustic"],
                    acoustic_offsets=arrs["acoustic_offsets"], visual=arrs["visual"],
                    visual_offsets=arrs["visual_offsets"], labels=arrs["labels"], ids=arrs["ids"].tolist(),
                    aligned=m["aligned"], max_seq_length=m["max_seq_length"], pad_token_id=m["pad_token_id"],
                    name=m["name"],
                )
            i = meta["info"]
            info = DatasetInfo(name=i["name"], format=i["format"], d_acoustic=i["d_acoustic"],
                               d_visual=i["d_visual"], simulated=i["simulated"], description=i["description"],
                               report=LoadReport.from_dict(i["report"]), aligned=i["aligned"], sources=i["sources"],
                               channels=i.get("channels", {}), feature_names=i.get("feature_names", {}))
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file cannot be trusted
        warnings.warn(f"ignoring a corrupt data cache file {path} ({type(exc).__name__}: {exc}); rebuilding it",
                      stacklevel=2)
        return None
    return LoadedData(splits=splits, info=info)
