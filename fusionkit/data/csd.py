"""Reader for CMU-MultimodalSDK computational sequences (``.csd``, HDF5).

A sequence file holds one root group named after the sequence with ``data/<video_id>/features (n, d)`` and
``data/<video_id>/intervals (n, 2)`` (seconds) plus a ``metadata`` group. A MOSI/MOSEI directory holds four:
timestamped words, COVAREP (acoustic), FACET (visual) and the opinion labels. Segments are cut by the label
intervals (segment id ``<video_id>_<row + 1>``, the SDK/MAG-BERT convention); each word's features are the mean
of the feature frames overlapping the word's interval; splits come from the video → split map.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.folds import MOSI_FOLDS
from fusionkit.data.segments import SPLITS, RawSegment, check_feature_range, check_label

SILENCE = {"sp", "<sp>", "sil"}
ROLES = ("words", "acoustic", "visual", "labels")


@dataclass
class Sequence:
    """One computational sequence: ``data[video] = (features (n, d), intervals (n, 2))``."""

    name: str
    path: Path
    data: dict
    metadata: dict


def read_sequence(path) -> Sequence:
    """Read a ``.csd`` file, checking the layout; errors name the file and video."""
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataError.at(f"not a readable HDF5 computational sequence ({exc})", file=path) from None
    with fh:
        roots = [k for k in fh.keys() if isinstance(fh[k], h5py.Group)]
        if len(roots) != 1:
            raise DataError.at(f"expected one root group named after the sequence, found {roots}", file=path)
        root = fh[roots[0]]
        if "data" not in root:
            raise DataError.at(f"root group {roots[0]!r} has no 'data' group", file=path)
        metadata = {}
        if "metadata" in root:
            for k, v in root["metadata"].items():
                try:
                    val = v[()]
                    val = val[0] if getattr(val, "shape", ()) == (1,) else val
                    metadata[k] = val.decode("utf-8", "replace") if isinstance(val, bytes) else val
                except Exception:  # noqa: BLE001 - metadata is informational only
                    metadata[k] = None
        data = {}
        try:
            for video, group in root["data"].items():
                if "features" not in group or "intervals" not in group:
                    raise DataError.at("needs 'features' and 'intervals'", file=path, segment=video)
                feats, intervals = group["features"][()], group["intervals"][()]
                if feats.ndim != 2 or intervals.ndim != 2 or intervals.shape[1] != 2 or len(feats) != len(intervals):
                    raise DataError.at(f"features {feats.shape} / intervals {intervals.shape} do not match (n, d) / "
                                       f"(n, 2)", file=path, segment=video)
                data[video] = (feats, intervals.astype(np.float64))
        except (OSError, KeyError, RuntimeError) as exc:
            raise DataError.at(f"truncated or corrupt computational sequence ({exc})", file=path) from None
    return Sequence(name=roots[0], path=path, data=data, metadata=metadata)


def dimension_names(seq: Sequence) -> list:
    """The sequence's ``metadata/dimension names`` as a list of str (empty when it has none or only ``[]``)."""
    raw = seq.metadata.get("dimension names")
    if raw is None:
        return []
    values = np.asarray(raw, dtype=object).ravel().tolist()
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return [] if names in ([], ["[]"]) else names


def role_of(seq: Sequence) -> str | None:
    """``words`` / ``acoustic`` / ``visual`` / ``labels`` from the sequence's root or file name."""
    text = f"{seq.name} {seq.path.name}".lower()
    for role, keys in (("labels", ("label",)), ("words", ("word",)), ("acoustic", ("covarep", "acoustic", "audio")),
                       ("visual", ("facet", "visual", "openface"))):
        if any(k in text for k in keys):
            return role
    return None


def label_segments(seq: Sequence) -> dict:
    """``{video: [(segment_id, start, end, label)]}`` from a label sequence (first column = sentiment)."""
    out = {}
    for video, (feats, intervals) in seq.data.items():
        rows = []
        for k in range(len(feats)):
            seg_id = f"{video}_{k + 1}"
            if feats.shape[1] < 1:
                raise DataError.at("label rows are empty", file=seq.path, segment=seg_id)
            label = check_label(feats[k, 0], file=seq.path, split=None, segment=seg_id)
            rows.append((seg_id, float(intervals[k, 0]), float(intervals[k, 1]), label))
        out[video] = rows
    return out


def find_split_map(path: Path) -> tuple[dict | None, dict]:
    """``(video → split, segment_id → transcript)`` from a ``*_segments.csv`` near ``path``, or ``(None, {})``."""
    base = path if path.is_dir() else path.parent
    for folder in (base, base.parent):
        for csv_path in sorted(folder.glob("*_segments.csv")):
            from fusionkit.data.segments_csv import SPLIT_ALIASES, read_rows

            folds, transcripts = {}, {}
            for row in read_rows(csv_path):
                video = (row.get("video_id") or row["segment_id"].rsplit("_", 1)[0]).strip()
                folds[video] = SPLIT_ALIASES.get(row["split"].strip().lower(), row["split"])
                transcripts[row["segment_id"]] = (row.get("words") or "").split() or \
                    (row.get("transcript") or "").lower().split()
            return folds, transcripts
    return None, {}


def split_map_for(path: Path, videos) -> tuple[dict, dict]:
    folds, transcripts = find_split_map(path)
    if folds is None:
        if all(v in MOSI_FOLDS for v in videos):
            return MOSI_FOLDS, {}
        raise DataError.at("no video → split map: put the dataset's <name>_segments.csv (with video_id and split "
                           "columns) next to the .csd files (CMU-MOSI's standard folds are built in)", file=path)
    return folds, transcripts


def _word_windows(feats: np.ndarray, frames: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the frames overlapping each word interval, and a flag for words with no overlapping frame."""
    order = np.argsort(frames[:, 0], kind="stable")
    feats, frames = feats[order], frames[order]
    csum = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0, dtype=np.float64)])
    ends = np.maximum.accumulate(frames[:, 1])
    lo = np.searchsorted(ends, words[:, 0], side="right")
    hi = np.searchsorted(frames[:, 0], words[:, 1], side="left")
    count = np.maximum(hi - lo, 0)
    means = (csum[np.maximum(hi, lo)] - csum[lo]) / np.maximum(count, 1)[:, None]
    return means.astype(np.float32), count == 0


def read_csd(path, *, dims=None, report: LoadReport, feature_names: dict | None = None) -> dict:
    """``{split: [RawSegment]}`` from a directory of ``.csd`` files (words, COVAREP, FACET, labels).

    ``feature_names``: a dict that receives the acoustic / visual dimension names from the sequences' metadata.
    """
    path = Path(path)
    files = sorted(path.glob("*.csd")) if path.is_dir() else [path]
    seqs = {}
    for f in files:
        seq = read_sequence(f)
        role = role_of(seq)
        if role is not None and role not in seqs:
            seqs[role] = seq
    missing = [r for r in ROLES if r not in seqs]
    if missing:
        raise DataError.at(
            f"missing computational sequence(s) for {', '.join(missing)}; a .csd dataset needs timestamped words, "
            f"COVAREP, FACET and opinion labels (e.g. CMU_MOSI_TimestampedWords.csd, CMU_MOSI_COVAREP.csd, "
            f"CMU_MOSI_VisualFacet_4.1.csd, CMU_MOSI_Opinion_Labels.csd)", file=path)
    if feature_names is not None:
        for role in ("acoustic", "visual"):
            names = dimension_names(seqs[role])
            if names:
                feature_names[role] = names
    segments = label_segments(seqs["labels"])
    folds, transcripts = split_map_for(path, segments)
    d_a, d_v = dims if dims is not None else (None, None)
    out = {s: [] for s in SPLITS}
    for video, rows in segments.items():
        split = folds.get(video)
        if split not in SPLITS:
            raise DataError.at(f"video {video!r} is not in the video → split map", file=seqs["labels"].path)
        feats = {}
        for role in ("words", "acoustic", "visual"):
            if video not in seqs[role].data:
                raise DataError.at(f"video {video!r} is missing from the {role} sequence", file=seqs[role].path,
                                   split=split)
            feats[role] = seqs[role].data[video]
        w_feats, w_iv = feats["words"]
        tokens = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in w_feats[:, 0]]
        keep = np.array([t.strip().lower() not in SILENCE and t.strip() != "" for t in tokens], dtype=bool)
        tokens = [t.strip() for t, k in zip(tokens, keep) if k]
        w_iv = w_iv[keep]
        channel = {}
        for role, name, dim in (("acoustic", "acoustic", d_a), ("visual", "visual", d_v)):
            f, iv = feats[role]
            f = np.asarray(f, dtype=np.float32)
            if dim is not None and f.shape[1] != dim:
                raise DataError.at(f"{name} features are {f.shape[1]}-d, expected {dim}-d", file=seqs[role].path,
                                   split=split, segment=video)
            bad = ~np.isfinite(f)
            if bad.any():
                report.sanitized_nonfinite[split] += int(bad.sum())
                f = np.where(bad, np.float32(0.0), f)
            check_feature_range(f, name=name, file=seqs[role].path, split=split, segment=video)
            channel[role] = (f, iv)
        d_a, d_v = channel["acoustic"][0].shape[1], channel["visual"][0].shape[1]
        mids = w_iv.mean(axis=1)
        for seg_id, start, end, label in rows:
            inside = (mids >= start) & (mids < end)
            words = [t for t, k in zip(tokens, inside) if k]
            intervals = w_iv[inside]
            if not words:
                fallback = transcripts.get(seg_id)
                if not fallback:
                    raise DataError.at("no words fall inside the segment interval (empty word list)",
                                       file=seqs["words"].path, split=split, segment=seg_id)
                report.fallbacks["transcript_for_empty_words"] += 1
                words = fallback  # no word timings: every word gets the segment's mean features
                intervals = np.tile([[start, end]], (len(words), 1))
            per_word = []
            for role in ("acoustic", "visual"):
                f, iv = channel[role]
                means, empty = _word_windows(f, iv, intervals)
                if empty.any():
                    report.fallbacks[f"{role}_word_without_frames"] += int(empty.sum())
                per_word.append(means)
            out[split].append(RawSegment(id=seg_id, words=words, acoustic=per_word[0], visual=per_word[1],
                                         label=label))
    empty = [s for s, segs in out.items() if not segs]
    if empty:
        raise DataError.at(f"no segments in split(s) {', '.join(empty)}", file=path)
    return out
