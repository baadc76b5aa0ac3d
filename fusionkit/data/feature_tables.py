"""Segment-level feature tables: one feature vector per segment, one file per modality, joined by segment id.

This is the shape of the utterance-level features users often have (openSMILE/eGeMAPS functionals, wav2vec or
OpenFace summaries, COVAREP utterance means). A table is

* a CSV with a ``segment_id`` column and one numeric column per feature (the header names the features), or
* an ``.npz`` (read with ``allow_pickle=False``) holding ``segment_id`` (n,) strings, ``features`` (n, d) numbers
  and optionally ``names`` (d,) strings.

A **word-level** table (written by ``python -m fusionkit extract``) has one row per word instead: the segment id
repeats and a ``word_index`` column / array (0 … n-1 within the segment) orders the rows; optional ``word``,
``start``, ``end`` and ``n_frames`` columns / arrays are metadata, not features. Each segment of the segment
table must then have exactly as many rows as words, and when ``word`` is given the words must match (compared
lower-case, punctuation ignored), so features cannot slide onto the wrong words. Its rows are the segment's
per-word features in both layouts (aligned: one row per word; ``"step"``: a sequence of n_words steps).

Tables are joined by id to a segment table (transcripts, labels, split). Ids missing on either side, duplicate
ids and non-numeric cells raise one :class:`DataError` naming the file and the ids; NaN/±inf cells become 0 and
are counted in ``report.sanitized_nonfinite`` (the rule for every reader).

Two layouts (``segment_features``):

* ``"repeat"`` (aligned batches): the segment's vector is repeated for every word of the segment, so after
  word-piece alignment every word piece carries it ([CLS]/[SEP] get zero rows, as for word-level rows) — the
  MAG-BERT convention for word-level features, with a constant row per word.
* ``"step"`` (unaligned batches): a one-step sequence ``(1, d)``; the batch carries its own
  ``acoustic_mask`` / ``visual_mask`` of length 1.
"""
from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.segments import check_feature_range

ID_COLUMN = "segment_id"
WORD_INDEX = "word_index"
WORD_META = (WORD_INDEX, "word", "start", "end", "n_frames")  # metadata of a word-level table, not features
LAYOUTS = ("repeat", "step")
SHOWN_IDS = 5  # ids quoted in an error message; the rest are counted


@dataclass
class FeatureTable:
    """``ids`` (n,) str, ``features (n, d)`` float32 (may hold NaN/±inf until joined), ``names`` (d,)."""

    path: Path
    ids: list
    features: np.ndarray
    names: list
    word_index: np.ndarray | None = None  # (n,) int for a word-level table (see the module docstring)
    words: list | None = None             # (n,) the words of a word-level table, when given

    @property
    def word_level(self) -> bool:
        return self.word_index is not None

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _mismatch(name: str, table, lacking: list, extra: list, *, word_level: bool) -> DataError:
    """The one error for a feature table whose segment ids differ from the segment table's."""
    parts = []
    if lacking:
        parts.append(f"{len(lacking)} segment(s) of the segment table have no row{'s' if word_level else ''}: "
                     f"{_ids_text(lacking)}")
    if extra:
        parts.append(f"{len(extra)} segment(s) of the table are not in the segment table: {_ids_text(extra)}"
                     if word_level else f"{len(extra)} row(s) name segments the segment table lacks: {_ids_text(extra)}")
    return DataError.at(f"{name} {'word-level ' if word_level else ''}feature table does not match the segment table "
                        f"by {ID_COLUMN}: " + "; ".join(parts), file=table.path)


def _ids_text(ids) -> str:
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def _repeated(items: list) -> list:
    """The items that occur more than once, each once, in order of their second occurrence."""
    seen, repeated = set(), {}
    for item in items:
        if item in seen:
            repeated.setdefault(item, None)
        seen.add(item)
    return list(repeated)


def _check_ids(path: Path, ids: list, word_index=None) -> None:
    empty = [k for k, i in enumerate(ids) if not i]
    if empty:
        raise DataError.at(f"{len(empty)} row(s) have an empty {ID_COLUMN} (rows {_ids_text(e + 1 for e in empty)})",
                           file=path)
    if word_index is not None:
        dup = _repeated(list(zip(ids, (int(k) for k in word_index))))
        if dup:
            raise DataError.at(f"duplicate ({ID_COLUMN}, {WORD_INDEX}) pair(s) {_ids_text(dup)}; each word of a "
                               f"segment needs exactly one row", file=path)
        return
    dup = _repeated(ids)
    if dup:
        raise DataError.at(f"duplicate {ID_COLUMN}(s) {_ids_text(dup)}; each segment needs exactly one row", file=path)


def _read_csv(path: Path) -> FeatureTable:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError.at(f"not a readable CSV feature table ({exc})", file=path) from None
    if not rows:
        raise DataError.at(f"empty feature table; expected a header with {ID_COLUMN} and feature columns", file=path)
    header = [h.strip() for h in rows[0]]
    if ID_COLUMN not in header:
        raise DataError.at(f"no {ID_COLUMN!r} column; the header must name {ID_COLUMN} and one column per feature "
                           f"(got {header[:4]}{' …' if len(header) > 4 else ''})", file=path)
    id_col = header.index(ID_COLUMN)
    word_level = WORD_INDEX in header
    meta = {h: header.index(h) for h in WORD_META if h in header} if word_level else {}
    feat_cols = [k for k in range(len(header)) if k != id_col and k not in meta.values()]
    if not feat_cols:
        raise DataError.at("no feature columns besides segment_id", file=path)
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    ids, values, bad, short = [], np.empty((len(body), len(feat_cols)), dtype=np.float64), {}, []
    for n, row in enumerate(body):
        seg = row[id_col].strip() if id_col < len(row) else ""
        ids.append(seg)
        if len(row) != len(header):
            short.append(seg or f"row {n + 2}")
            continue
        for j, k in enumerate(feat_cols):
            cell = row[k].strip()
            try:
                values[n, j] = float(cell)  # "nan", "inf", "-inf" parse: non-finite, sanitized when joined
            except ValueError:
                bad.setdefault(seg, (header[k], cell))
    if short:
        raise DataError.at(f"rows of segment(s) {_ids_text(short)} do not have {len(header)} fields (truncated or "
                           f"corrupt file?)", file=path)
    if bad:
        first = next(iter(bad.items()))
        raise DataError.at(f"non-numeric cell(s) in segment(s) {_ids_text(bad)} (e.g. {first[0]!r}, column "
                           f"{first[1][0]!r}: {first[1][1]!r}); every feature cell must be a number", file=path)
    word_index = words = None
    if word_level:
        word_index = _word_index(path, ids, [row[meta[WORD_INDEX]].strip() for row in body])
        words = [row[meta["word"]].strip() for row in body] if "word" in meta else None
    _check_ids(path, ids, word_index)
    names = [header[k] for k in feat_cols]
    _check_names(path, names)
    return FeatureTable(path=path, ids=ids, features=values.astype(np.float32), names=names, word_index=word_index,
                        words=words)


def _word_index(path: Path, ids: list, raw) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.int64)
    for n, cell in enumerate(raw):
        try:
            value = float(cell)
            if value != int(value) or value < 0:
                raise ValueError
            out[n] = int(value)
        except (TypeError, ValueError, OverflowError):
            raise DataError.at(f"{WORD_INDEX} {cell!r} of segment {ids[n]!r} is not a word position (0, 1, 2 …)",
                               file=path) from None
    return out


# what numpy's and zipfile's readers raise on a damaged archive (truncated, flipped bytes, bad CRC)
_DAMAGED_NPZ = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError, RuntimeError)


def _read_npz(path: Path) -> FeatureTable:
    try:
        npz = np.load(path, allow_pickle=False)
    except _DAMAGED_NPZ as exc:
        raise DataError.at(f"not a readable .npz feature table ({exc})", file=path) from None
    with npz:
        missing = [k for k in (ID_COLUMN, "features") if k not in npz.files]
        if missing:
            raise DataError.at(f"missing array(s) {', '.join(missing)}; a .npz feature table holds {ID_COLUMN} (n,) "
                               f"strings, features (n, d) numbers and optionally names (d,)", file=path)
        try:
            raw_ids = npz[ID_COLUMN]
            raw = npz["features"]
            names = [str(n) for n in npz["names"].tolist()] if "names" in npz.files else None
            raw_index = npz[WORD_INDEX] if WORD_INDEX in npz.files else None
            raw_words = npz["word"] if raw_index is not None and "word" in npz.files else None
        except ValueError as exc:  # object arrays need pickle, which is refused
            if "pickle" not in str(exc):
                raise DataError.at(f"not a readable .npz feature table ({exc})", file=path) from None
            raise DataError.at(f"holds arrays that need pickle to load ({exc}); store strings and numbers only",
                               file=path) from None
        except _DAMAGED_NPZ as exc:
            raise DataError.at(f"not a readable .npz feature table ({type(exc).__name__}: {exc})", file=path) from None
    if raw_ids.ndim != 1 or raw_ids.dtype.kind not in "US":
        raise DataError.at(f"{ID_COLUMN} must be a 1-d array of strings, got dtype {raw_ids.dtype} shape "
                           f"{raw_ids.shape}", file=path)
    ids = [(i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i)).strip() for i in raw_ids.tolist()]
    if raw.ndim != 2 or len(raw) != len(ids):
        raise DataError.at(f"features have shape {raw.shape}, expected ({len(ids)}, d): one row per {ID_COLUMN}",
                           file=path)
    if raw.dtype.kind in "biuf":
        values = raw.astype(np.float32)
    else:
        values = np.empty(raw.shape, dtype=np.float32)
        bad = []
        for n, row in enumerate(raw):
            try:
                values[n] = np.asarray(row, dtype=np.float64)
            except (TypeError, ValueError):
                bad.append(ids[n])
        if bad:
            raise DataError.at(f"non-numeric cell(s) in segment(s) {_ids_text(bad)}; every feature cell must be a "
                               f"number", file=path)
    if names is not None and len(names) != values.shape[1]:
        raise DataError.at(f"names has {len(names)} entries for {values.shape[1]} feature columns", file=path)
    word_index = words = None
    if raw_index is not None:
        if raw_index.shape != (len(ids),):
            raise DataError.at(f"{WORD_INDEX} has shape {raw_index.shape}, expected ({len(ids)},): one per row",
                               file=path)
        word_index = _word_index(path, ids, raw_index.tolist())
        if raw_words is not None:
            if raw_words.shape != (len(ids),) or raw_words.dtype.kind not in "US":
                raise DataError.at(f"word must be ({len(ids)},) strings, got {raw_words.dtype} {raw_words.shape}",
                                   file=path)
            words = [str(w) for w in raw_words.tolist()]
    _check_ids(path, ids, word_index)
    names = names if names is not None else [f"f{k}" for k in range(values.shape[1])]
    _check_names(path, names)
    return FeatureTable(path=path, ids=ids, features=values, names=names, word_index=word_index, words=words)


def _check_names(path: Path, names: list) -> None:
    unnamed = [k for k, n in enumerate(names) if not n]
    if unnamed:
        raise DataError.at(f"feature column(s) {unnamed[:SHOWN_IDS]} have no name; name every feature",
                           file=path)
    repeated = _repeated(names)
    if repeated:
        raise DataError.at(f"feature name(s) {_ids_text(repeated)} appear more than once; feature "
                           f"names must be unique", file=path)


def read_feature_table(path) -> FeatureTable:
    """Read a CSV or ``.npz`` feature table (by extension; ``.npz`` also by its zip magic)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError.at("feature table does not exist", file=path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix.lower() == ".npz" or magic == b"PK\x03\x04":
        return _read_npz(path)
    return _read_csv(path)


def join_features(raw: dict, tables: dict, *, layout: str, report: LoadReport) -> dict:
    """Attach ``tables`` (``{"acoustic" | "visual": FeatureTable}``) to the segments of ``raw`` in place.

    Every segment of the segment table must have exactly one row in every table and every row must belong to a
    segment. A modality without a table is absent: its arrays are ``(n, 0)``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown segment_features {layout!r}; expected one of {', '.join(LAYOUTS)}")
    segment_ids = [seg.id for segs in raw.values() for seg in segs]
    known = set(segment_ids)
    for name, table in tables.items():
        if table.word_level:
            _join_words(raw, name, table, report)
            continue
        rows = {i: k for k, i in enumerate(table.ids)}
        lacking = [i for i in segment_ids if i not in rows]
        extra = [i for i in table.ids if i not in known]
        if lacking or extra:
            raise _mismatch(name, table, lacking, extra, word_level=False)
        for split, segs in raw.items():
            for seg in segs:
                vec = table.features[rows[seg.id]]
                bad = ~np.isfinite(vec)
                if bad.any():
                    report.sanitized_nonfinite[split] += int(bad.sum())
                    vec = np.where(bad, np.float32(0.0), vec)
                check_feature_range(vec, name=name, file=table.path, split=split, segment=seg.id,
                                    names=getattr(table, "names", None))
                steps = len(seg.words) if layout == "repeat" else 1
                setattr(seg, name, np.ascontiguousarray(np.tile(vec[None, :], (steps, 1)), dtype=np.float32))
    for segs in raw.values():
        for seg in segs:
            seg.aligned = layout == "repeat"
            for name in ("acoustic", "visual"):
                if name not in tables:
                    setattr(seg, name, np.zeros((len(seg.words) if layout == "repeat" else 0, 0), np.float32))
    return raw


def _normal(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def _join_words(raw: dict, name: str, table: FeatureTable, report: LoadReport) -> None:
    """Attach a word-level table: each segment's rows in ``word_index`` order, one per word of the segment."""
    by_segment: dict = {}
    for k, seg_id in enumerate(table.ids):
        by_segment.setdefault(seg_id, []).append(k)
    segment_ids = [seg.id for segs in raw.values() for seg in segs]
    lacking = [i for i in segment_ids if i not in by_segment]
    extra = [i for i in by_segment if i not in set(segment_ids)]
    if lacking or extra:
        raise _mismatch(name, table, lacking, extra, word_level=True)
    for split, segs in raw.items():
        for seg in segs:
            rows = sorted(by_segment[seg.id], key=lambda k: table.word_index[k])
            positions = [int(table.word_index[k]) for k in rows]
            if positions != list(range(len(rows))) or len(rows) != len(seg.words):
                raise DataError.at(f"{name} word-level feature table has {len(rows)} row(s) (word_index "
                                   f"{positions[:3]}{' …' if len(rows) > 3 else ''}) but the segment has "
                                   f"{len(seg.words)} words; give one row per word, word_index 0 … n-1 (were the "
                                   f"segment table's words taken from the same word timings?)", file=table.path,
                                   split=split, segment=seg.id)
            if table.words is not None:
                for n, (k, word) in enumerate(zip(rows, seg.words)):
                    if _normal(table.words[k]) != _normal(word):
                        raise DataError.at(f"{name} word-level feature table: word {n} is {table.words[k]!r} but "
                                           f"the segment table has {word!r}; the segment table's words must be the "
                                           f"word timings' words, in order (see segments_words.csv beside the table)",
                                           file=table.path, split=split, segment=seg.id)
            vec = table.features[rows]
            bad = ~np.isfinite(vec)
            if bad.any():
                report.sanitized_nonfinite[split] += int(bad.sum())
                vec = np.where(bad, np.float32(0.0), vec)
            setattr(seg, name, np.ascontiguousarray(vec, dtype=np.float32))
