"""``provenance.json``: which extractor, version and settings made the features, from which exact inputs."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROVENANCE = "provenance.json"
ALIGNMENT_RULE = ("mean of the frames overlapping each word's interval (CMU-MultimodalSDK rule); NaN values left "
                  "out; a word without frames: zeros and n_frames 0")


@dataclass(frozen=True)
class ExtractConfig:
    """The settings that decide the features' values; a model trained on them needs new clips extracted alike."""

    feature_set: str = "eGeMAPSv02"
    feature_level: str = "lld"
    sample_rate: int = 16000
    openface_groups: tuple = ("au_intensity", "au_presence", "gaze", "pose")
    visual: bool = False
    openface_names: tuple = field(default=())  # fixed column list (prediction); empty = select by groups

    def to_dict(self) -> dict:
        d = asdict(self)
        d["openface_groups"] = list(self.openface_groups)
        d["openface_names"] = list(self.openface_names)
        return d

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import numpy
    import soundfile

    from fusionkit import __version__ as fk
    from fusionkit.extract.acoustic import versions as smile_versions

    return {"fusionkit": fk, **smile_versions(), "soundfile": soundfile.__version__,
            "libsndfile": getattr(soundfile, "__libsndfile_version__", "unknown"), "numpy": numpy.__version__,
            "python": platform.python_version()}


def write_provenance(out: Path, data: dict) -> Path:
    data = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    tmp = out / (PROVENANCE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / PROVENANCE)  # never a half-written provenance
    return out / PROVENANCE


def read_provenance(path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / PROVENANCE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the extraction provenance {str(path)!r} ({exc}); it is written by "
                         f"python -m fusionkit extract next to the feature tables") from None
    if not isinstance(data, dict) or "config" not in data or "modalities" not in data:
        raise ValueError(f"{str(path)!r} is not a provenance.json written by python -m fusionkit extract")
    return data


def config_from(data: dict) -> ExtractConfig:
    c = dict(data["config"])
    c["openface_groups"] = tuple(c.get("openface_groups", ()))
    c["openface_names"] = tuple(c.get("openface_names", ()))
    return ExtractConfig(**c)
