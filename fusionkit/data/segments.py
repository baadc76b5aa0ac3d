"""Word-level segments, the common form every reader produces, and their validation."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fusionkit.data.errors import DataError, LoadReport

LABEL_RANGE = (-3.0, 3.0)
SPLITS = ("train", "valid", "test")


@dataclass
class RawSegment:
    """One opinion segment before tokenization.

    words: the word sequence fed to the tokenizer.
    acoustic / visual: ``(n_words, d)`` float32 when ``aligned`` (one row per word), else ``(T_a, d_a)`` /
        ``(T_v, d_v)`` sequences at their own rate.
    label: sentiment intensity in [-3, 3].
    """

    id: str
    words: list
    acoustic: np.ndarray
    visual: np.ndarray
    label: float
    aligned: bool = True


def check_label(value, *, file, split, segment) -> float:
    """The label as a float; a non-numeric or out-of-range label is a :class:`DataError`."""
    if np.iscomplexobj(value):
        raise DataError.at(f"label {value!r} is complex, not a real number", file=file, split=split,
                           segment=segment)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raw = np.asarray(value, dtype=object)
        shown = raw.ravel()[0] if raw.size == 1 else value
        shown = shown.item() if isinstance(shown, np.generic) else shown
        raise DataError.at(f"label {shown!r} is not numeric", file=file, split=split, segment=segment) from None
    if arr.size != 1:
        raise DataError.at(f"label has {arr.size} values, expected one", file=file, split=split, segment=segment)
    label = float(arr.reshape(()))
    if not math.isfinite(label) or not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
        raise DataError.at(
            f"label {label!r} is outside [{LABEL_RANGE[0]:g}, {LABEL_RANGE[1]:g}]",
            file=file, split=split, segment=segment,
        )
    return label


# Largest magnitude a feature value may have. Real features are far below it (MOSI's COVAREP utterance means
# reach 376, FACET and OpenFace values a few hundred); 1e38 or 1e9 in a file is a broken extraction, which would
# overflow the loss after files were written. Refused, not clipped: clipping would change the data silently.
FEATURE_BOUND = 1e6


def check_feature_range(arr: np.ndarray, *, name: str, file, split, segment, names=None) -> None:
    """Refuse finite values beyond ±:data:`FEATURE_BOUND`, naming the file, split, segment and column."""
    if arr.size == 0:
        return
    huge = np.abs(arr) > FEATURE_BOUND
    if huge.any():
        row, col = (int(x) for x in np.argwhere(huge)[0]) if arr.ndim == 2 else (0, int(np.argmax(huge)))
        value = float(arr[row, col] if arr.ndim == 2 else arr[col])
        column = f"column {col}" + (f" ({names[col]})" if names is not None and col < len(names) else "")
        raise DataError.at(f"{name} feature {column} holds {value:.6g} (row {row}; {int(huge.sum())} value(s) beyond "
                           f"±{FEATURE_BOUND:g}): a broken extraction, not a feature value; fix or drop the segment",
                           file=file, split=split, segment=segment)


def sanitize_features(features, *, name: str, dim: int | None, file, split, segment, report: LoadReport,
                      rows: int | None = None, count_as: str | None = None) -> np.ndarray:
    """``features`` as float32 ``(n, d)`` with NaN/±inf set to 0 (counted in ``report``).

    ``dim``: the required feature size (None = any); ``rows``: the required number of rows (None = any);
    ``count_as``: the split name to count under when the file names it differently (MAG-BERT's ``dev``).
    """
    if np.iscomplexobj(features):
        raise DataError.at(f"{name} features are complex, not real numbers", file=file, split=split, segment=segment)
    try:
        arr = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError.at(f"{name} features are not a numeric array", file=file, split=split,
                           segment=segment) from None
    if arr.ndim != 2:
        raise DataError.at(
            f"{name} features have shape {arr.shape}, expected (n, d)", file=file, split=split, segment=segment
        )
    if dim is not None and arr.shape[1] != dim:
        raise DataError.at(
            f"{name} features are {arr.shape[1]}-d, expected {dim}-d", file=file, split=split, segment=segment
        )
    if rows is not None and arr.shape[0] != rows:
        raise DataError.at(
            f"{name} features have {arr.shape[0]} rows but the segment has {rows} words",
            file=file, split=split, segment=segment,
        )
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad:
        arr = np.where(bad, np.float32(0.0), arr)
        report.sanitized_nonfinite[count_as or split] += n_bad
    check_feature_range(arr, name=name, file=file, split=split, segment=segment)
    return np.ascontiguousarray(arr)


def check_words(words, *, file, split, segment) -> list:
    if isinstance(words, (str, bytes)) or not hasattr(words, "__len__"):
        raise DataError.at(f"words must be a list of strings, got {type(words).__name__}", file=file, split=split,
                           segment=segment)
    try:
        out = []
        for w in words:
            if not isinstance(w, (str, bytes)):  # as the CSV reader sees them: every word is text
                raise TypeError(f"word {len(out)} is {type(w).__name__} {w!r}, not text")
            out.append(w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w))
        for w in out:  # numpy string arrays can hold code points beyond Unicode, which tokenizers choke on
            if w and max(w) > "\U0010ffff":
                raise ValueError(f"code point {hex(ord(max(w)))} is beyond Unicode")
            w.encode("utf-8")
    except (TypeError, ValueError, SystemError) as exc:  # SystemError: numpy's str of an invalid code point
        raise DataError.at(f"the words are not valid text ({type(exc).__name__}: {exc})", file=file, split=split,
                           segment=segment) from None
    if not out:
        raise DataError.at("the word list is empty", file=file, split=split, segment=segment)
    return out


def check_segment_id(raw, *, seen: set, file, split) -> str:
    """A segment id as text, the same rules for every reader: missing (None, empty) or non-text ids and an id
    seen before in the file are a :class:`DataError`."""
    seg_id = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not isinstance(seg_id, str):
        raise DataError.at(f"segment id {raw!r} is {'missing' if raw is None else type(raw).__name__ + ', not text'}",
                           file=file, split=split)
    seg_id = seg_id.strip()
    if not seg_id:
        raise DataError.at("a segment id is empty", file=file, split=split)
    if seg_id in seen:
        raise DataError.at("duplicate segment_id", file=file, split=split, segment=seg_id)
    seen.add(seg_id)
    return seg_id
