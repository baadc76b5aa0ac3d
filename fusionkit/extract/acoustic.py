"""Frame-level acoustic features from openSMILE (the ``opensmile`` package): eGeMAPS low-level descriptors by
default, any of its feature sets by name (``opensmile.FeatureSet``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FEATURE_SET = "eGeMAPSv02"
LEVELS = {"lld": "LowLevelDescriptors", "lld_deltas": "LowLevelDescriptors_Deltas"}


class FeatureSetError(ValueError):
    """An unknown feature set or level; the message lists the valid names."""


INSTALL = "pip install 'fusionkit[extract]' (opensmile, soundfile, scipy)"


def feature_sets() -> list:
    try:
        import opensmile
    except ImportError:
        raise FeatureSetError(f"openSMILE is not installed; {INSTALL}") from None

    return [f.name for f in opensmile.FeatureSet]


def check_feature_set(name: str, level: str = "lld") -> None:
    """Refuse an unknown set or level before any file is read."""
    names = feature_sets()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        raise FeatureSetError(f"unknown openSMILE feature set {name!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; expected one of {', '.join(names)}")
    if level not in LEVELS:
        raise FeatureSetError(f"unknown feature level {level!r}; expected one of {', '.join(LEVELS)} (functionals "
                              f"summarise a whole clip and cannot be averaged over words)")
    if level == "lld_deltas" and name.startswith(("GeMAPS", "eGeMAPS")):
        raise FeatureSetError(f"openSMILE's {name} has no delta low-level descriptors; use --feature-level lld")


@dataclass
class Frames:
    names: list
    features: np.ndarray   # (n, d) float64
    intervals: np.ndarray  # (n, 2) seconds


class Acoustic:
    """One openSMILE extractor, built once per process."""

    def __init__(self, feature_set: str = DEFAULT_FEATURE_SET, level: str = "lld") -> None:
        import opensmile

        check_feature_set(feature_set, level)
        self.feature_set, self.level = feature_set, level
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                     feature_level=opensmile.FeatureLevel[LEVELS[level]])

    @property
    def names(self) -> list:
        return list(self.smile.feature_names)

    def frames(self, signal: np.ndarray, sample_rate: int) -> Frames:
        df = self.smile.process_signal(signal, sample_rate)
        start = df.index.get_level_values("start").total_seconds().to_numpy()
        end = df.index.get_level_values("end").total_seconds().to_numpy()
        return Frames(names=[str(c) for c in df.columns], features=df.to_numpy(dtype=np.float64),
                      intervals=np.stack([start, end], axis=1))


def versions() -> dict:
    import opensmile

    return {"opensmile_package": getattr(opensmile, "__version__", "unknown")}
