"""``extract``: word-aligned features for a set of clips, written as feature tables with their provenance."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fusionkit.extract.acoustic import check_feature_set
from fusionkit.extract.audio import AUDIO_SUFFIXES
from fusionkit.extract.openface import DEFAULT_GROUPS
from fusionkit.extract.provenance import ALIGNMENT_RULE, ExtractConfig, sha256, versions, write_provenance
from fusionkit.extract.runner import MODALITIES, PARTS, ExtractError, find_files, plan_jobs, run_jobs
from fusionkit.extract.tables import write_mmsa_pickle, write_segment_words, write_tables
from fusionkit.extract.words import read_words

ERRORS = "errors.json"
LOCK_NAME = ".extract.lock"  # held while an extraction writes to its --out


@dataclass
class ExtractResult:
    out: Path
    segments: list          # extracted segment ids, in table order
    failed: dict            # segment id → message
    reused: int             # segments taken from an earlier run (resume)
    tables: dict            # modality → {"words": path, "segments": path, …}
    provenance: dict

    @property
    def ok(self) -> bool:
        return not self.failed


def extract(*, audio, words, out, openface=None, feature_set: str = "eGeMAPSv02", feature_level: str = "lld",
            sample_rate: int = 16000, openface_groups=DEFAULT_GROUPS, openface_names=(), workers: int = 1,
            csv: bool = False, pkl_segments=None, resume: bool = True, progress: bool = True) -> ExtractResult:
    """Extract word-level and segment-level features for every clip in ``audio`` (a file or a directory of
    ``<segment_id>.<wav|flac|mp4|…>``) with the word timings in ``words`` (CSV, ``.csd``, aligner JSON or a
    directory of them) and, optionally, OpenFace CSVs ``<segment_id>.csv`` in ``openface``.

    Writes ``out/acoustic.npz`` (+ ``visual.npz`` with ``openface``), the ``*_segments.npz`` tables,
    ``segments_words.csv``, ``provenance.json`` and ``errors.json`` (one message per skipped file); with
    ``pkl_segments`` (a segment table with labels and splits) also ``aligned.pkl`` in MMSA's layout.
    A file that fails is named in ``result.failed`` and skipped. Finished segments are reused on a rerun with the
    same settings and unchanged inputs (``resume=False`` redoes them).
    """
    if workers < 1:
        raise ExtractError(f"workers must be ≥ 1, got {workers}")
    if sample_rate < 8000:
        raise ExtractError(f"sample_rate {sample_rate} Hz is below 8000 Hz; use 16000 (the default)")
    try:
        check_feature_set(feature_set, feature_level)
    except ValueError as exc:
        raise ExtractError(str(exc)) from None
    config = ExtractConfig(feature_set=feature_set, feature_level=feature_level, sample_rate=int(sample_rate),
                           openface_groups=tuple(openface_groups), visual=openface is not None,
                           openface_names=tuple(openface_names))
    if pkl_segments is not None and not Path(pkl_segments).is_file():
        raise ExtractError(f"--pkl needs the segment table with labels and splits; {str(pkl_segments)!r} does not "
                           f"exist")
    try:
        source = read_words(words)
    except ValueError as exc:
        raise ExtractError(str(exc)) from None
    audio_files = find_files(audio, AUDIO_SUFFIXES, "audio")
    face_files = find_files(openface, (".csv",), "openface") if openface is not None else None
    if Path(audio).is_file() and len(source.segments) == 1:  # one clip: its timings whatever their file's name
        source.segments = {Path(audio).stem: next(iter(source.segments.values()))}
        if face_files is not None and len(face_files) == 1:
            face_files = {Path(audio).stem: next(iter(face_files.values()))}
    jobs, failed = plan_jobs(audio_files, source.segments, face_files)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExtractError(f"cannot write to --out {str(out)!r} ({exc.strerror or exc})") from None
    from fusionkit.locking import DirectoryLock, LockHeld

    try:
        lock = DirectoryLock(out, name=LOCK_NAME, tool="fusionkit extract").acquire()
    except LockHeld as exc:  # two extractions into one --out would write the same part files
        raise ExtractError(str(exc)) from None
    try:
        return _extract(jobs, failed, source, config, out, workers=workers, csv=csv, pkl_segments=pkl_segments,
                        resume=resume, progress=progress)
    finally:
        lock.release()


def _extract(jobs, failed, source, config, out: Path, *, workers, csv, pkl_segments, resume, progress):
    (out / PARTS).mkdir(exist_ok=True)
    done, job_failed, reused = run_jobs(jobs, config, parts=out / PARTS, workers=workers, progress=progress,
                                        resume=resume)
    failed.update(job_failed)
    parts = [done[j.segment] for j in jobs if j.segment in done]
    if parts:  # every segment must carry the same feature names (one openSMILE set, one OpenFace column list)
        ref = parts[0].names
        for p in parts[1:]:
            for m in ref:
                if p.names.get(m) != ref[m]:
                    failed[p.segment] = (f"segment {p.segment!r}: its {m} columns differ from segment "
                                         f"{parts[0].segment!r}'s (OpenFace run with other outputs?)")
        parts = [p for p in parts if p.segment not in failed]
    (out / ERRORS).write_text(json.dumps(dict(sorted(failed.items())), indent=2) + "\n")
    if not parts:
        first = next(iter(failed.values()), "no segments")
        raise ExtractError(f"no segment could be extracted ({len(failed)} failed; first: {first}); see "
                           f"{out / ERRORS}", failed=failed)
    tables = {m: write_tables(out, parts, m, csv_too=csv) for m in MODALITIES if m in parts[0].features}
    write_segment_words(out, parts)
    if pkl_segments is not None:
        tables["pkl"] = str(write_mmsa_pickle(out, parts, pkl_segments))
    counts = Counter()
    for p in parts:
        counts.update(p.counts)
    counts["segments"] = len(parts)
    counts["words"] = sum(len(p.words) for p in parts)
    counts["dropped_silence_tokens"] = source.dropped_silence
    counts["failed_segments"] = len(failed)
    ref = parts[0]
    provenance = {
        "extractor": "fusionkit.extract",
        "versions": versions(),
        "config": config.to_dict(),
        "config_key": config.key(),
        "alignment": ALIGNMENT_RULE,
        "segment_level": "mean of all frames of the clip (NaN left out)",
        "modalities": {m: {"dim": len(ref.names[m]), "names": ref.names[m], "tables": tables[m],
                           "source": "openSMILE " + config.feature_set + " " + config.feature_level if m == "acoustic"
                           else "OpenFace 2.0 FeatureExtraction CSV (" + ", ".join(config.openface_groups) + ")"}
                       for m in MODALITIES if m in ref.features},
        "word_timings": {"format": source.format,
                         "files": {str(f): sha256(f) for f in source.files if Path(f).is_file()}},
        "counts": {k: int(v) for k, v in sorted(counts.items())},
        "inputs": {p.segment: p.inputs for p in parts},
        "failed": dict(sorted(failed.items())),
        "reused_from_earlier_run": reused,
    }
    write_provenance(out, provenance)
    return ExtractResult(out=out, segments=[p.segment for p in parts], failed=dict(sorted(failed.items())),
                         reused=reused, tables=tables, provenance=provenance)
