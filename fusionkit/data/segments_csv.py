"""Reader for segment tables (``mosi_segments.csv``): real transcripts, labels and split, simulated features."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.segments import SPLITS, RawSegment, check_label
from fusionkit.data.simulate import simulate_segment

REQUIRED = ("segment_id", "label", "split")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "validation": "valid", "val": "valid",
                 "test": "test"}


def read_rows(path: Path) -> list:
    """The CSV's rows as dicts, with required columns checked."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in columns]
            if not ("words" in columns or "transcript" in columns):
                missing.append("words or transcript")
            if missing:
                raise DataError.at(f"missing column(s) {', '.join(missing)}; expected segment_id, video_id, clip_id, "
                                   f"start, end, label, split, transcript, words", file=path)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError.at(f"not a readable CSV file ({exc})", file=path) from None
    return rows


def read_segments_csv(path, *, dims, report: LoadReport, simulate: bool = True) -> dict:
    """``{split: [RawSegment]}`` with simulated nonverbal rows of ``dims = (d_acoustic, d_visual)``.

    ``simulate=False``: no nonverbal rows (``(n_words, 0)`` arrays), for joining real feature tables
    (:mod:`fusionkit.data.feature_tables`).

    ``words`` (lower-case word sequence) is used when present, else the lower-cased ``transcript`` (counted in
    ``report.fallbacks['transcript_for_empty_words']``).
    """
    path = Path(path)
    d_a, d_v = dims if dims is not None else (0, 0)
    out = {s: [] for s in SPLITS}
    seen = set()
    for line, row in enumerate(read_rows(path), start=2):
        seg_id = (row.get("segment_id") or "").strip()
        if not seg_id:
            raise DataError.at(f"row {line} has an empty segment_id", file=path)
        if None in row or any(row.get(c) is None for c in REQUIRED):
            raise DataError.at(f"row {line} has the wrong number of fields (truncated or corrupt file?)",
                               file=path, segment=seg_id)
        split = SPLIT_ALIASES.get(row["split"].strip().lower())
        if split is None:
            raise DataError.at(f"unknown split {row['split']!r}; expected train, valid (or dev) or test",
                               file=path, segment=seg_id)
        if seg_id in seen:
            raise DataError.at("duplicate segment_id", file=path, split=split, segment=seg_id)
        seen.add(seg_id)
        label = check_label(row["label"].strip(), file=path, split=split, segment=seg_id)
        words = (row.get("words") or "").split()
        if not words:
            words = (row.get("transcript") or "").lower().split()
            if not words:
                raise DataError.at("both words and transcript are empty", file=path, split=split, segment=seg_id)
            report.fallbacks["transcript_for_empty_words"] += 1
        video_id = (row.get("video_id") or "").strip() or seg_id.rsplit("_", 1)[0]
        if simulate:
            acoustic, visual = simulate_segment(segment_id=seg_id, video_id=video_id, label=label,
                                                n_words=len(words), d_acoustic=d_a, d_visual=d_v)
        else:
            acoustic = visual = np.zeros((len(words), 0), np.float32)
        out[split].append(RawSegment(id=seg_id, words=words, acoustic=acoustic, visual=visual, label=label))
    empty = [s for s, segs in out.items() if not segs]
    if empty:
        raise DataError.at(f"no segments in split(s) {', '.join(empty)}", file=path)
    return out
