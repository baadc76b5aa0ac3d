"""Writing the extracted features as the feature tables the loaders read (:mod:`fusionkit.data.feature_tables`).

Per modality (``acoustic``, ``visual``):

* ``<modality>.npz`` — word level: one row per word, ``segment_id`` repeated, ``word_index`` 0…n-1 within the
  segment, ``word``, ``start`` / ``end`` (s), ``n_frames`` (frames averaged; 0 = no frames, zeros), ``features``
  ``(rows, d)`` and ``names`` ``(d,)``. ``--features acoustic=OUT/acoustic.npz`` joins it word by word.
* ``<modality>_segments.npz`` — segment level: one row per segment, the mean over all of the clip's frames.
* with ``csv=True`` the same two tables as CSV (``segment_id, word_index, word, start, end, n_frames, <names>``).

Also ``segments_words.csv`` (``segment_id, words``): the word sequence of every segment, for the segment table.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

WORD_META = ("word_index", "word", "start", "end", "n_frames")


def _atomic_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_csv(path: Path, header: list, rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def write_tables(out: Path, parts: list, modality: str, *, csv_too: bool = False) -> dict:
    """Write one modality's word- and segment-level tables from ``parts`` (in segment order); returns paths."""
    names = parts[0].names[modality]
    seg_ids, index, words, starts, ends, frames, rows = [], [], [], [], [], [], []
    for p in parts:
        m = len(p.words)
        seg_ids += [p.segment] * m
        index += list(range(m))
        words += p.words
        starts.append(p.starts)
        ends.append(p.ends)
        frames.append(p.n_frames[modality])
        rows.append(p.features[modality].reshape(m, len(names)))
    word_arrays = dict(segment_id=np.array(seg_ids, dtype=str), word_index=np.array(index, dtype=np.int32),
                       word=np.array(words, dtype=str), start=np.concatenate(starts), end=np.concatenate(ends),
                       n_frames=np.concatenate(frames).astype(np.int32),
                       features=np.concatenate(rows).astype(np.float32), names=np.array(names, dtype=str))
    seg_arrays = dict(segment_id=np.array([p.segment for p in parts], dtype=str),
                      features=np.stack([p.clip[modality] for p in parts]).astype(np.float32),
                      names=np.array(names, dtype=str))
    paths = {"words": out / f"{modality}.npz", "segments": out / f"{modality}_segments.npz"}
    _atomic_npz(paths["words"], **word_arrays)
    _atomic_npz(paths["segments"], **seg_arrays)
    if csv_too:
        paths["words_csv"] = out / f"{modality}.csv"
        paths["segments_csv"] = out / f"{modality}_segments.csv"
        _atomic_csv(paths["words_csv"], ["segment_id", *WORD_META, *names],
                    ([s, i, w, f"{a:.6f}", f"{b:.6f}", n, *(f"{v:.7g}" for v in row)]
                     for s, i, w, a, b, n, row in zip(seg_ids, index, words, word_arrays["start"],
                                                      word_arrays["end"], word_arrays["n_frames"],
                                                      word_arrays["features"])))
        _atomic_csv(paths["segments_csv"], ["segment_id", *names],
                    ([s, *(f"{v:.7g}" for v in row)] for s, row in zip(seg_arrays["segment_id"],
                                                                         seg_arrays["features"])))
    return {k: str(v) for k, v in paths.items()}


def write_segment_words(out: Path, parts: list) -> Path:
    path = out / "segments_words.csv"
    _atomic_csv(path, ["segment_id", "words"], ([p.segment, " ".join(p.words)] for p in parts))
    return path


def write_mmsa_pickle(out: Path, parts: list, segments_csv, *, max_words: int | None = None) -> Path:
    """An MMSA-style aligned pickle (``{split: {raw_text, id, audio, vision, regression_labels}}``, features
    zero-padded at the back to the longest segment) with labels and splits from ``segments_csv``."""
    from fusionkit.data.pickles import dump_pickle
    from fusionkit.data.segments_csv import SPLIT_ALIASES, read_rows

    rows = {r["segment_id"].strip(): r for r in read_rows(Path(segments_csv))}
    missing = [p.segment for p in parts if p.segment not in rows]
    if missing:
        raise ValueError(f"--pkl: segment(s) {missing[:5]} have no row in {str(segments_csv)!r} (labels and splits "
                         f"come from it)")
    length = max_words or max(len(p.words) for p in parts)
    data = {}
    for split in ("train", "valid", "test"):
        chosen = [p for p in parts if SPLIT_ALIASES.get(rows[p.segment]["split"].strip().lower()) == split]
        part = {"id": np.array([p.segment for p in chosen], dtype=object),
                "raw_text": np.array([" ".join(p.words) for p in chosen], dtype=object),
                "regression_labels": np.array([float(rows[p.segment]["label"]) for p in chosen], dtype=np.float32)}
        for key, modality in (("audio", "acoustic"), ("vision", "visual")):
            d = chosen[0].features[modality].shape[1] if chosen and modality in chosen[0].features else 0
            arr = np.zeros((len(chosen), length, d), dtype=np.float32)
            for i, p in enumerate(chosen):
                if modality in p.features:
                    f = p.features[modality][:length]
                    arr[i, : len(f)] = f
            part[key] = arr
        data[split] = part
    return dump_pickle(out / "aligned.pkl", data)
