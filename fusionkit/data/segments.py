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
    return np.ascontiguousarray(arr)


def check_words(words, *, file, split, segment) -> list:
    if isinstance(words, (str, bytes)) or not hasattr(words, "__len__"):
        raise DataError.at(f"words must be a list of strings, got {type(words).__name__}", file=file, split=split,
                           segment=segment)
    try:
        out = [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in words]
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
