"""Real signals made here for the extraction tests: espeak-ng speech word by word, OpenFace CSVs in OpenFace
2.0's documented schema, word-timing files in each supported format."""
from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np

ESPEAK = shutil.which("espeak-ng")
NO_ESPEAK = "espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)"


def speak(word: str, *, pitch: int = 50, speed: int = 160) -> tuple[np.ndarray, int]:
    """One word spoken by espeak-ng: ``(mono float32 signal, sample rate)``."""
    import soundfile as sf

    wav = subprocess.run([ESPEAK, "--stdout", "-p", str(pitch), "-s", str(speed), word], capture_output=True,
                         check=True).stdout
    signal, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return signal, sr


def spoken_clip(path: Path, words: list, *, pitches=None, silences=None) -> list:
    """Write the words spoken one by one and concatenated to ``path``; returns ``[(word, start, end)]``.

    ``silences``: ``{index: seconds}`` of silence inserted before word ``index`` (kept as a word named ``<pause>``
    with its own interval when the word is ``None``)."""
    import soundfile as sf

    pitches = pitches or [50] * len(words)
    silences = silences or {}
    pieces, timings, t, sr = [], [], 0.0, 22050
    for k, (word, pitch) in enumerate(zip(words, pitches)):
        if word is None:
            n = int(round(silences.get(k, 0.5) * sr))
            pieces.append(np.zeros(n, np.float32))
            timings.append(("pause", t, t + n / sr))
            t += n / sr
            continue
        signal, sr = speak(word, pitch=pitch)
        pieces.append(signal)
        timings.append((word, t, t + len(signal) / sr))
        t += len(signal) / sr
    sf.write(str(path), np.concatenate(pieces), sr)
    return timings


def tone(path: Path, seconds: float, *, sr: int = 16000, channels: int = 1, freq: float = 220.0,
         subtype: str = "PCM_16") -> np.ndarray:
    """A voiced-like harmonic tone (so openSMILE finds a pitch), ``(n, channels)``."""
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.2 / h * np.sin(2 * np.pi * freq * h * t) for h in range(1, 6)).astype(np.float32)
    data = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(str(path), data, sr, subtype=subtype)
    return data


def write_words_csv(path: Path, rows: list) -> Path:
    """``rows``: ``[(segment_id, word, start, end)]``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["segment_id", "word", "start", "end"])
        w.writerows(rows)
    return path


# OpenFace 2.0 FeatureExtraction's columns, as its wiki page "Output-Format" lists them (714 columns).
AU_R = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
AU_C = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45"]


def openface_columns() -> list:
    cols = ["frame", "face_id", "timestamp", "confidence", "success"]
    cols += [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    cols += [f"eye_lmk_{a}_{i}" for a in ("x", "y") for i in range(56)]
    cols += [f"eye_lmk_{a}_{i}" for a in ("X", "Y", "Z") for i in range(56)]
    cols += [f"pose_{k}" for k in ("Tx", "Ty", "Tz", "Rx", "Ry", "Rz")]
    cols += [f"{a}_{i}" for a in ("x", "y") for i in range(68)]
    cols += [f"{a}_{i}" for a in ("X", "Y", "Z") for i in range(68)]
    cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    cols += [f"AU{a}_r" for a in AU_R] + [f"AU{a}_c" for a in AU_C]
    return cols


def write_openface(path: Path, seconds: float, *, fps: float = 30.0, au12=None, failed=None, nan_cells=None) -> Path:
    """An OpenFace 2.0 CSV (``", "`` separators, as OpenFace writes them) of ``seconds`` at ``fps``.

    au12: ``[(t0, t1, value)]`` AU12 intensity (and presence 1) on frames with ``t0 <= timestamp < t1``, else 0;
    failed: ``[(t0, t1)]`` frames with success 0 (no face); nan_cells: ``[(frame, column)]`` left empty."""
    cols = openface_columns()
    n = int(round(seconds * fps))
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.01, size=(n, len(cols)))
    idx = {c: k for k, c in enumerate(cols)}
    times = np.arange(n) / fps
    values[:, idx["frame"]] = np.arange(1, n + 1)
    values[:, idx["face_id"]] = 0
    values[:, idx["timestamp"]] = times
    values[:, idx["confidence"]] = 0.98
    values[:, idx["success"]] = 1
    for a in AU_R:
        values[:, idx[f"AU{a}_r"]] = 0.0
    for a in AU_C:
        values[:, idx[f"AU{a}_c"]] = 0.0
    for t0, t1, v in au12 or []:
        on = (times >= t0 - 1e-9) & (times < t1 - 1e-9)
        values[on, idx["AU12_r"]] = v
        values[on, idx["AU12_c"]] = 1.0
    for t0, t1 in failed or []:
        off = (times >= t0 - 1e-9) & (times < t1 - 1e-9)
        values[off, idx["success"]] = 0
        values[off, idx["confidence"]] = 0.0
    blank = set(nan_cells or [])
    ints = {"frame", "face_id", "success"} | {f"AU{a}_c" for a in AU_C}
    lines = [", ".join(cols)]
    for i in range(n):
        cells = []
        for k, c in enumerate(cols):
            if (i, c) in blank:
                cells.append("")
            elif c in ints:
                cells.append(str(int(round(values[i, k]))))
            elif c == "timestamp":
                cells.append(f"{values[i, k]:.3f}")
            else:
                cells.append(f"{values[i, k]:.6g}")
        lines.append(", ".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path
