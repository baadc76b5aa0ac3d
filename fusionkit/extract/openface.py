"""Per-frame visual features from OpenFace 2.0 ``FeatureExtraction`` CSV files, read by column name.

OpenFace's documented output (wiki page *Output-Format*) is one row per frame with the columns ``frame``,
``face_id``, ``timestamp`` (s), ``confidence``, ``success``, then gaze (``gaze_0_x`` … ``gaze_1_z``,
``gaze_angle_x``, ``gaze_angle_y``), eye landmarks (``eye_lmk_*``), head pose (``pose_Tx`` … ``pose_Rz``),
face landmarks (``x_*``, ``y_*``, ``X_*``, ``Y_*``, ``Z_*``), shape parameters (``p_*``), action-unit intensities
``AUxx_r`` (0–5) and presences ``AUxx_c`` (0/1). OpenFace writes the header with a space after each comma
(``frame, face_id, timestamp, …``); names are stripped before use, so both spellings read.

Kept (:data:`DEFAULT_GROUPS`): AU intensities, AU presences, gaze vectors and angles, head pose — in that order,
each group in the file's column order. Landmarks and shape parameters are left out (they encode identity and
position more than expression).

Frame ``i`` covers ``[timestamp_i, timestamp_i + step)`` with ``step`` the median timestamp difference. Frames with
``success`` 0 (no face tracked) are left out (counted); a file with several ``face_id`` values (FaceLandmarkVidMulti)
is refused: keep one face's rows.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED = ("timestamp", "success")
GROUPS = {
    "au_intensity": re.compile(r"^AU\d\d_r$"),
    "au_presence": re.compile(r"^AU\d\d_c$"),
    "gaze": re.compile(r"^gaze_(\d_[xyz]|angle_[xy])$"),
    "pose": re.compile(r"^pose_[TR][xyz]$"),
}
DEFAULT_GROUPS = tuple(GROUPS)


class OpenFaceError(ValueError):
    """An OpenFace CSV that cannot be used; the message names the file and the fix."""


@dataclass
class FaceFrames:
    names: list            # (d,) kept column names
    features: np.ndarray   # (n, d) float64, NaN where a cell was empty or not a number
    intervals: np.ndarray  # (n, 2) seconds
    failed_frames: int     # rows with success 0, left out
    duration: float        # seconds covered by the file


def select_columns(header: list, groups=DEFAULT_GROUPS) -> list:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise OpenFaceError(f"unknown OpenFace column group(s) {unknown}; expected {', '.join(GROUPS)}")
    return [h for g in groups for h in header if GROUPS[g].match(h)]


def read_openface(path, *, groups=DEFAULT_GROUPS, names: list | None = None) -> FaceFrames:
    """Read one FeatureExtraction CSV. ``names``: require exactly these columns (as recorded at training)."""
    path = Path(path)
    if not path.is_file():
        raise OpenFaceError(f"openface {str(path)!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise OpenFaceError(f"openface {str(path)!r}: not a readable CSV ({exc})") from None
    if not rows:
        raise OpenFaceError(f"openface {str(path)!r} is empty; expected OpenFace FeatureExtraction output")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise OpenFaceError(f"openface {str(path)!r}: no {', '.join(missing)} column; expected the CSV written by "
                            f"OpenFace 2.0 FeatureExtraction (frame, face_id, timestamp, confidence, success, …)")
    keep = select_columns(header, groups) if names is None else list(names)
    absent = [c for c in keep if c not in header]
    if absent:
        raise OpenFaceError(f"openface {str(path)!r} lacks column(s) {', '.join(absent[:5])}"
                            f"{' …' if len(absent) > 5 else ''} that the features were extracted with; run "
                            f"FeatureExtraction with the same outputs (-aus -gaze -pose)")
    if not keep:
        raise OpenFaceError(f"openface {str(path)!r} has none of the AU, gaze or pose columns; run FeatureExtraction "
                            f"with -aus -gaze -pose")
    index = {h: k for k, h in enumerate(header)}
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    short = [n + 2 for n, r in enumerate(body) if len(r) != len(header)]
    if short:
        raise OpenFaceError(f"openface {str(path)!r}: row(s) {short[:5]} do not have {len(header)} fields "
                            f"(truncated file?)")
    if "face_id" in index:
        faces = {r[index["face_id"]].strip() for r in body}
        if len(faces) > 1:
            raise OpenFaceError(f"openface {str(path)!r} tracks {len(faces)} faces (face_id {sorted(faces)[:4]}); "
                                f"keep the speaker's rows only")

    def num(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return float("nan")

    try:
        times = np.array([float(r[index["timestamp"]]) for r in body], dtype=np.float64)
    except ValueError:
        raise OpenFaceError(f"openface {str(path)!r}: a timestamp is not a number") from None
    success = np.array([num(r[index["success"]]) == 1 for r in body], dtype=bool)
    feats = np.array([[num(r[index[c]]) for c in keep] for r in body], dtype=np.float64).reshape(len(body), len(keep))
    diffs = np.diff(np.sort(times))
    step = float(np.median(diffs[diffs > 0])) if (diffs > 0).any() else 1.0 / 30
    intervals = np.stack([times, times + step], axis=1) if len(times) else np.zeros((0, 2))
    duration = float(intervals[:, 1].max()) if len(times) else 0.0
    return FaceFrames(names=keep, features=feats[success], intervals=intervals[success],
                      failed_frames=int((~success).sum()), duration=duration)
