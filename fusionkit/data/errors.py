"""Errors and the load report: nothing is sanitized or dropped without being counted."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class DataError(ValueError):
    """A data file is missing, malformed or unsafe. The message names the file, split and segment id."""

    @classmethod
    def at(cls, message: str, *, file=None, split: str | None = None, segment: str | None = None) -> "DataError":
        where = []
        if file is not None:
            where.append(f"file {str(file)!r}")
        if split is not None:
            where.append(f"split {split!r}")
        if segment is not None:
            where.append(f"segment {segment!r}")
        prefix = ", ".join(where)
        return cls(f"{prefix}: {message}" if prefix else message)


@dataclass
class LoadReport:
    """Counts of everything the loader changed.

    sanitized_nonfinite: NaN/±inf feature values replaced by 0, per split.
    dropped: samples removed, by reason (e.g. ``max_samples``).
    fallbacks: samples kept but repaired, by reason (e.g. ``transcript_for_empty_words``).
    truncated: samples whose word pieces were cut to ``max_seq_length``, per split.
    """

    sanitized_nonfinite: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    fallbacks: Counter = field(default_factory=Counter)
    truncated: Counter = field(default_factory=Counter)

    @property
    def total_sanitized(self) -> int:
        return int(sum(self.sanitized_nonfinite.values()))

    @property
    def total_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def merge(self, other: "LoadReport") -> "LoadReport":
        for name in ("sanitized_nonfinite", "dropped", "fallbacks", "truncated"):
            getattr(self, name).update(getattr(other, name))
        return self

    def to_dict(self) -> dict:
        return {
            "sanitized_nonfinite": {k: int(v) for k, v in sorted(self.sanitized_nonfinite.items())},
            "sanitized_nonfinite_total": self.total_sanitized,
            "dropped": {k: int(v) for k, v in sorted(self.dropped.items())},
            "dropped_total": self.total_dropped,
            "fallbacks": {k: int(v) for k, v in sorted(self.fallbacks.items())},
            "truncated": {k: int(v) for k, v in sorted(self.truncated.items())},
        }

    def describe(self) -> list[str]:
        """One line per kind of change the readers made (empty when they changed nothing): what the log and
        ``results.md`` say, so no repair stays an internal counter."""
        def per_split(counter) -> str:
            return ", ".join(f"{k} {int(v)}" for k, v in sorted(counter.items()) if v)

        lines = []
        if self.total_sanitized:
            lines.append(f"{self.total_sanitized} NaN/inf feature value(s) set to 0 "
                         f"({per_split(self.sanitized_nonfinite)})")
        for reason, n in sorted(self.fallbacks.items()):
            if n:
                lines.append(f"{int(n)} × {reason.replace('_', ' ')}")
        if sum(self.truncated.values()):
            lines.append(f"{int(sum(self.truncated.values()))} segment(s) cut to the maximum sequence length "
                         f"({per_split(self.truncated)})")
        dropped: dict = {}
        for key, n in sorted(self.dropped.items()):  # keys are "reason" or "reason:split"
            reason, _, split = key.partition(":")
            if n:
                dropped.setdefault(reason, Counter())[split or "all"] += int(n)
        for reason, counts in dropped.items():
            lines.append(f"{sum(counts.values())} segment(s) left out ({reason.replace('_', ' ')}: "
                         f"{per_split(counts)})")
        return lines

    @classmethod
    def from_dict(cls, data: dict) -> "LoadReport":
        return cls(
            sanitized_nonfinite=Counter(data.get("sanitized_nonfinite", {})),
            dropped=Counter(data.get("dropped", {})),
            fallbacks=Counter(data.get("fallbacks", {})),
            truncated=Counter(data.get("truncated", {})),
        )
