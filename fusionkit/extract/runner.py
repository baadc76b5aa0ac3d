"""Extraction over many clips: one job per segment, in parallel, resumable, one bad file never stops the rest.

Each finished segment is written to ``OUT/.parts/<segment_id>.npz`` with a small JSON beside it holding the
settings key and the sha256 of its inputs; a later run with the same settings and unchanged inputs reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionkit.extract.acoustic import Acoustic
from fusionkit.extract.align import check_timings, clip_mean, word_means
from fusionkit.extract.audio import AUDIO_SUFFIXES, AudioError, read_audio
from fusionkit.extract.openface import OpenFaceError, read_openface
from fusionkit.extract.provenance import ExtractConfig, sha256
from fusionkit.extract.words import WordsError

PARTS = ".parts"
MODALITIES = ("acoustic", "visual")


class ExtractError(ValueError):
    """A problem with the command as a whole (not one file): printed as one ``error:`` line.

    ``failed``: the per-file messages when every file failed."""

    def __init__(self, message: str, failed: dict | None = None) -> None:
        super().__init__(message)
        self.failed = failed or {}


@dataclass
class Job:
    segment: str
    audio: str
    words: list
    openface: str | None = None
    inputs: dict | None = None  # sha256 of the inputs, once computed


@dataclass
class Part:
    """One extracted segment."""

    segment: str
    words: list
    starts: np.ndarray
    ends: np.ndarray
    features: dict           # modality → (m, d) float32
    n_frames: dict           # modality → (m,) int
    clip: dict               # modality → (d,) float32 segment-level mean
    names: dict              # modality → [d names]
    counts: Counter = field(default_factory=Counter)
    inputs: dict = field(default_factory=dict)   # role → {"path", "sha256"}
    audio: dict = field(default_factory=dict)


_EXTRACTOR: dict = {}


def _acoustic(config: ExtractConfig) -> Acoustic:
    key = (config.feature_set, config.feature_level)
    if key not in _EXTRACTOR:
        _EXTRACTOR.clear()
        _EXTRACTOR[key] = Acoustic(config.feature_set, config.feature_level)
    return _EXTRACTOR[key]


def _words_key(words: list) -> str:
    text = json.dumps([[w.word, w.start, w.end] for w in words])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def process(job: Job, config: ExtractConfig) -> Part:
    """Extract one segment (raises AudioError / WordsError / OpenFaceError with the file named)."""
    counts: Counter = Counter()
    signal, info = read_audio(job.audio, sample_rate=config.sample_rate)
    counts["downmixed"] += int(info.downmixed)
    counts["resampled"] += int(info.resampled_from is not None)
    words = check_timings(list(job.words), duration=info.duration, segment=job.segment, counts=counts)
    intervals = np.array([[w.start, w.end] for w in words], dtype=np.float64).reshape(-1, 2)
    frames = _acoustic(config).frames(signal, config.sample_rate)
    features, n_frames, clip, names = {}, {}, {}, {}
    means, count, bad = word_means(frames.features, frames.intervals, intervals)
    features["acoustic"], n_frames["acoustic"], names["acoustic"] = means, count, frames.names
    clip["acoustic"] = clip_mean(frames.features)
    counts["nonfinite_acoustic_values"] += bad
    counts["empty_words_acoustic"] += int((count == 0).sum())
    if config.visual:
        if job.openface is None:
            raise OpenFaceError(f"segment {job.segment!r}: no OpenFace CSV <segment_id>.csv for it in --openface")
        face = read_openface(job.openface, groups=config.openface_groups, names=list(config.openface_names) or None)
        means, count, bad = word_means(face.features, face.intervals, intervals)
        features["visual"], n_frames["visual"], names["visual"] = means, count, face.names
        clip["visual"] = clip_mean(face.features)
        counts["nonfinite_visual_values"] += bad
        counts["failed_face_frames"] += face.failed_frames
        counts["empty_words_visual"] += int((count == 0).sum())
    return Part(segment=job.segment, words=[w.word for w in words], starts=intervals[:, 0], ends=intervals[:, 1],
                features=features, n_frames=n_frames, clip=clip, names=names, counts=counts,
                audio={"duration": info.duration, "source_rate": info.source_rate, "channels": info.channels,
                       "decoder": info.decoder})


# -- parts on disk ------------------------------------------------------------------------------------------
def _inputs(job: Job) -> dict:
    out = {"audio": {"path": str(job.audio), "sha256": sha256(job.audio)}}
    if job.openface is not None:
        out["openface"] = {"path": str(job.openface), "sha256": sha256(job.openface)}
    out["words"] = {"sha256_of_timings": _words_key(job.words)}
    return out


def _safe_name(segment: str) -> str:
    return hashlib.sha256(segment.encode()).hexdigest()[:12] + "_" + "".join(
        c if c.isalnum() or c in "-_." else "_" for c in segment)[:80]


def save_part(parts: Path, part: Part, config: ExtractConfig) -> None:
    name = _safe_name(part.segment)
    arrays = {"starts": part.starts, "ends": part.ends, "words": np.array(part.words, dtype=str)}
    for m in part.features:
        arrays[f"{m}_features"] = part.features[m]
        arrays[f"{m}_n_frames"] = part.n_frames[m]
        arrays[f"{m}_clip"] = part.clip[m]
        arrays[f"{m}_names"] = np.array(part.names[m], dtype=str)
    tmp = parts / f"{name}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, parts / f"{name}.npz")
    meta = {"segment": part.segment, "config": config.key(), "inputs": part.inputs, "counts": dict(part.counts),
            "audio": part.audio}
    (parts / f"{name}.tmp.json").write_text(json.dumps(meta, sort_keys=True))
    os.replace(parts / f"{name}.tmp.json", parts / f"{name}.json")


def load_part(parts: Path, job: Job, config: ExtractConfig, inputs: dict) -> Part | None:
    """The finished part of ``job`` when its settings and inputs are unchanged, else None."""
    name = _safe_name(job.segment)
    meta_path, arr_path = parts / f"{name}.json", parts / f"{name}.npz"
    if not (meta_path.is_file() and arr_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("config") != config.key() or meta.get("inputs") != inputs:
            return None
        with np.load(arr_path, allow_pickle=False) as z:
            mods = [m for m in MODALITIES if f"{m}_features" in z.files]
            return Part(segment=job.segment, words=[str(w) for w in z["words"].tolist()], starts=z["starts"],
                        ends=z["ends"], features={m: z[f"{m}_features"] for m in mods},
                        n_frames={m: z[f"{m}_n_frames"] for m in mods}, clip={m: z[f"{m}_clip"] for m in mods},
                        names={m: [str(n) for n in z[f"{m}_names"].tolist()] for m in mods},
                        counts=Counter(meta.get("counts", {})), inputs=inputs, audio=meta.get("audio", {}))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a damaged part is redone


def _run_job(job: Job, config: ExtractConfig, parts: str | None) -> tuple[str, Part | None, str | None]:
    try:
        inputs = job.inputs or _inputs(job)
        part = process(job, config)
        part.inputs = inputs
        if parts is not None:
            save_part(Path(parts), part, config)
        return job.segment, part, None
    except (AudioError, WordsError, OpenFaceError, OSError) as exc:
        return job.segment, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file is reported, never aborts the others
        return job.segment, None, f"segment {job.segment!r}: {type(exc).__name__}: {exc}"


def run_jobs(jobs: list, config: ExtractConfig, *, parts: Path | None, workers: int = 1, progress: bool = True,
             resume: bool = True) -> tuple[dict, dict, int]:
    """``({segment: Part}, {segment: error message}, reused count)``."""
    done, failed, pending, reused = {}, {}, [], 0
    for job in jobs:
        part = None
        if resume and parts is not None:
            try:
                inputs = _inputs(job)
            except OSError as exc:
                failed[job.segment] = f"segment {job.segment!r}: {exc}"
                continue
            part = load_part(parts, job, config, inputs)
            job.inputs = inputs
        if part is not None:
            done[job.segment] = part
            reused += 1
        else:
            pending.append(job)
    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="extract", unit="file", file=sys.stderr)
    parts_s = None if parts is None else str(parts)
    results = []
    if workers <= 1 or len(pending) <= 1:
        for job in pending:
            results.append(_run_job(job, config, parts_s))
            if bar is not None:
                bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_job, job, config, parts_s) for job in pending]
            for fut in as_completed(futures):
                results.append(fut.result())
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    for segment, part, error in results:
        if part is not None:
            done[segment] = part
        else:
            failed[segment] = error
    return done, failed, reused


def find_files(path, suffixes, what: str) -> dict:
    """``{stem: path}`` for a file or a directory of files with one of ``suffixes``."""
    path = Path(path)
    if path.is_file():
        return {path.stem: path}
    if not path.is_dir():
        raise ExtractError(f"--{what} {str(path)!r} does not exist")
    out, clash = {}, []
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix.lower() in suffixes:
            if f.stem in out:
                clash.append(f.stem)
            out[f.stem] = f
    if clash:
        raise ExtractError(f"--{what} {str(path)!r}: several files for segment(s) {clash[:5]} (one file per "
                           f"segment id, e.g. keep the .wav and remove the .mp4)")
    if not out:
        raise ExtractError(f"--{what} {str(path)!r} holds no {'/'.join(suffixes[:4])} … files")
    return out


def plan_jobs(audio: dict, words: dict, openface: dict | None) -> tuple[list, dict]:
    """Jobs for the segments that have both audio and words; the others as failures naming what is missing."""
    both = sorted(set(audio) & set(words))
    if not both:
        raise ExtractError(f"no audio file matches a segment of the word timings: audio files are named like "
                           f"{sorted(audio)[:3]}, word-timing segment ids look like {sorted(words)[:3]}; name each "
                           f"audio file <segment_id>.wav")
    failed = {s: f"segment {s!r}: word timings but no audio file <segment_id>.wav (or another audio suffix)"
              for s in sorted(set(words) - set(audio))}
    failed.update({s: f"segment {s!r}: audio {str(audio[s])!r} has no word timings"
                   for s in sorted(set(audio) - set(words))})
    jobs = [Job(segment=s, audio=str(audio[s]), words=words[s],
                openface=None if openface is None or s not in openface else str(openface[s])) for s in both]
    return jobs, failed
