"""The CMU-MultimodalSDK's alignment rule: a word's features are the mean of the frames overlapping its interval.

A frame ``[f0, f1)`` overlaps a word ``[w0, w1)`` when ``f1 > w0`` and ``f0 < w1``. NaN values in a frame are left
out of that feature's mean (counted); a word with no frame (a pause in the video track, a zero-length word, an
untimed word) gets zeros and a frame count of 0 — the count travels with the row, so it can be masked.

Word timings are checked against the audio first (:func:`check_timings`):

* a start after its end, or a negative time → refused;
* a word that starts at or after the end of the audio → refused (the timings belong to other audio);
* a word that ends after the audio → clipped to the audio's end (counted as ``clipped``);
* words out of order → sorted by start time (counted as ``reordered``); overlapping words keep their own
  intervals, so a shared frame counts in both (counted as ``overlapping``).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from fusionkit.extract.words import Word, WordsError

END_TOLERANCE = 0.02  # s: aligners round the last word's end up to their frame step


def check_timings(words: list, *, duration: float, segment: str, counts: Counter) -> list:
    """The words sorted and clipped to ``[0, duration]``; see the module docstring for the rules."""
    for w in words:
        if not w.timed:
            counts["untimed"] += 1
            continue
        if w.start < 0 or w.end < w.start:
            raise WordsError(f"segment {segment!r}: word {w.word!r} has start {w.start:g} s and end {w.end:g} s; "
                             f"times must satisfy 0 ≤ start ≤ end")
        if w.start >= duration:
            raise WordsError(f"segment {segment!r}: word {w.word!r} starts at {w.start:g} s but the audio ends at "
                             f"{duration:.3f} s; the word timings do not belong to this audio")
    timed_starts = [w.start for w in words if w.timed]
    if any(b < a for a, b in zip(timed_starts, timed_starts[1:])):
        counts["reordered_segments"] += 1
        # untimed words keep their place relative to the word before them
        keyed, last = [], -math.inf
        for i, w in enumerate(words):
            last = w.start if w.timed else last
            keyed.append((last, i, w))
        words = [w for _, _, w in sorted(keyed, key=lambda t: (t[0], t[1]))]
    out, prev_end = [], -math.inf
    for w in words:
        if not w.timed:
            out.append(w)
            continue
        if w.start < prev_end:
            counts["overlapping"] += 1
        prev_end = max(prev_end, w.end)
        if w.end > duration + END_TOLERANCE:
            counts["clipped"] += 1
        out.append(Word(w.word, w.start, min(w.end, duration)) if w.end > duration else w)
    return out


def word_means(features: np.ndarray, frames: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(means (m, d) float32, frame counts (m,) int64, NaN/inf values in the frames, left out of the means)``.

    features: ``(n, d)`` per-frame values; frames: ``(n, 2)`` frame intervals (s); words: ``(m, 2)`` word intervals
    (NaN rows = untimed words).
    """
    features = np.asarray(features, dtype=np.float64)
    n, d = features.shape
    m = len(words)
    if n == 0 or m == 0:
        return np.zeros((m, d), np.float32), np.zeros(m, np.int64), 0
    order = np.argsort(frames[:, 0], kind="stable")
    features, frames = features[order], frames[order]
    finite = np.isfinite(features)
    values = np.where(finite, features, 0.0)
    csum = np.concatenate([np.zeros((1, d)), np.cumsum(values, axis=0)])
    ccount = np.concatenate([np.zeros((1, d), np.int64), np.cumsum(finite, axis=0)])
    timed = np.isfinite(words).all(axis=1)
    w = np.where(timed[:, None], words, 0.0)
    if (np.diff(frames[:, 1]) < 0).any():
        # frames of unequal length, one inside another: the overlapping frames of a word need not be contiguous
        hit = (frames[None, :, 1] > w[:, None, 0]) & (frames[None, :, 0] < w[:, None, 1]) & timed[:, None]
        per_feature = hit.astype(np.int64) @ finite.astype(np.int64)
        sums = hit.astype(np.float64) @ values
        means = np.where(per_feature > 0, sums / np.maximum(per_feature, 1), 0.0)
        return means.astype(np.float32), hit.sum(axis=1).astype(np.int64), int((~finite).sum())
    ends = frames[:, 1]  # fixed-length frames (openSMILE, OpenFace): the overlapping frames are a contiguous run
    lo = np.searchsorted(ends, w[:, 0], side="right")
    hi = np.maximum(np.searchsorted(frames[:, 0], w[:, 1], side="left"), lo)
    lo, hi = np.where(timed, lo, 0), np.where(timed, hi, 0)
    count = hi - lo
    per_feature = ccount[hi] - ccount[lo]
    sums = csum[hi] - csum[lo]
    means = np.where(per_feature > 0, sums / np.maximum(per_feature, 1), 0.0)
    return means.astype(np.float32), count.astype(np.int64), int((~finite).sum())


def clip_mean(features: np.ndarray) -> np.ndarray:
    """The segment-level row: the mean over all of a clip's frames (NaN left out; no frames → zeros)."""
    features = np.asarray(features, dtype=np.float64)
    if features.size == 0:
        return np.zeros(features.shape[1], np.float32)
    finite = np.isfinite(features)
    n = finite.sum(axis=0)
    return np.where(n > 0, np.where(finite, features, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0).astype(np.float32)
