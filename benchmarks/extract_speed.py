"""Extraction throughput: seconds of audio per second of wall time, for the whole pipeline (reading, openSMILE,
word alignment, writing the tables) with 1 and 2 processes, beside bare openSMILE on the same files in the same
run (``Smile.process_file`` per file, 1 and 2 processes).

    python -m benchmarks.extract_speed                       # 40 clips × 10 s, best of 3
    python -m benchmarks.extract_speed --clips 4 --seconds 3 --repeats 1   # a quick check

Clips are generated here at 16 kHz (no resampling, so both sides read the same samples): espeak-ng speech when
espeak-ng is installed, else a harmonic tone with noise; word timings every 0.3 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SR = 16000
WORDS = "the movie was not at all what i expected but the actors were really good".split()


def make_clips(folder: Path, n: int, seconds: float) -> tuple[list, Path]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    espeak = shutil.which("espeak-ng")
    speech = None
    if espeak:
        out = subprocess.run([espeak, "--stdout", " ".join(WORDS)], capture_output=True, check=True).stdout
        import io

        from fusionkit.extract.audio import resample

        x, sr = sf.read(io.BytesIO(out), dtype="float32")
        speech = resample(x, sr, SR)
    rows, files = ["segment_id,word,start,end"], []
    for k in range(n):
        total = int(seconds * SR)
        if speech is not None:
            reps = int(np.ceil(total / len(speech)))
            signal = np.tile(speech, reps)[:total] * rng.uniform(0.6, 1.0)
        else:
            t = np.arange(total) / SR
            signal = (0.2 * np.sin(2 * np.pi * 140 * (1 + 0.1 * np.sin(t)) * t) + 0.01 * rng.normal(size=total))
        path = folder / f"clip{k:03d}.wav"
        sf.write(str(path), signal.astype(np.float32), SR)
        files.append(path)
        for j, start in enumerate(np.arange(0, seconds - 0.3, 0.3)):
            rows.append(f"clip{k:03d},{WORDS[j % len(WORDS)]},{start:.3f},{start + 0.3:.3f}")
    words = folder.parent / "words.csv"
    words.write_text("\n".join(rows) + "\n")
    return files, words


_SMILE = None


def _bare_one(path: str) -> int:
    global _SMILE
    import opensmile

    if _SMILE is None:
        _SMILE = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                 feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return len(_SMILE.process_file(path))


def _bare_signal(path: str) -> int:
    import soundfile as sf

    if _SMILE is None:
        _bare_one(path)
    signal, sr = sf.read(path, dtype="float32")
    return len(_SMILE.process_signal(signal, sr))


def bare(files: list, workers: int, fn=_bare_one) -> float:
    t0 = time.perf_counter()
    if workers == 1:
        for f in files:
            fn(str(f))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fn, [str(f) for f in files]))
    return time.perf_counter() - t0


def pipeline(files: list, words: Path, workers: int, out: Path) -> float:
    from fusionkit.extract import extract

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = extract(audio=files[0].parent, words=words, out=out, workers=workers, resume=False, progress=False)
    elapsed = time.perf_counter() - t0
    if result.failed:
        raise SystemExit(f"extraction failed: {result.failed}")
    return elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extract_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs per configuration")
    args = p.parse_args(argv)
    audio_s = args.clips * args.seconds
    with tempfile.TemporaryDirectory(prefix="extract-speed-") as tmp:
        clips = Path(tmp) / "clips"
        clips.mkdir()
        files, words = make_clips(clips, args.clips, args.seconds)
        # one-time costs (imports, loading openSMILE's library) are paid once per command, not per second of
        # audio: both sides are warmed in this process first; pool workers fork from it
        _bare_one(str(files[0]))
        from fusionkit.extract import extract

        extract(audio=files[0], words=words, out=Path(tmp) / "warm", resume=False, progress=False)
        configs = [("bare openSMILE (process_file)", 1, lambda: bare(files, 1)),
                   ("bare openSMILE (process_file)", 2, lambda: bare(files, 2)),
                   ("bare openSMILE (soundfile + process_signal)", 1, lambda: bare(files, 1, _bare_signal)),
                   ("bare openSMILE (soundfile + process_signal)", 2, lambda: bare(files, 2, _bare_signal)),
                   ("fusionkit extract (read, align, write)", 1, lambda: pipeline(files, words, 1, Path(tmp) / "o1")),
                   ("fusionkit extract (read, align, write)", 2, lambda: pipeline(files, words, 2, Path(tmp) / "o2"))]
        best = {}
        for _ in range(args.repeats):  # interleaved, so a busy spell hits every configuration alike
            for name, workers, fn in configs:
                best[(name, workers)] = min(best.get((name, workers), float("inf")), fn())
    print(f"{args.clips} clips × {args.seconds:g} s = {audio_s:g} s of audio at {SR} Hz, eGeMAPSv02 LLDs; best of "
          f"{args.repeats}; cpus: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'':46s} {'procs':>5s} {'wall s':>8s} {'audio s / wall s':>17s}")
    for (name, workers), wall in best.items():
        print(f"{name:46s} {workers:5d} {wall:8.2f} {audio_s / wall:17.1f}")
    p1, p2 = best[("fusionkit extract (read, align, write)", 1)], best[("fusionkit extract (read, align, write)", 2)]
    for bare_name in ("bare openSMILE (process_file)", "bare openSMILE (soundfile + process_signal)"):
        print(f"pipeline throughput / {bare_name} on 1 process: {best[(bare_name, 1)] / p1:.2f}")
    print(f"pipeline 2 processes / 1 process: {p1 / p2:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
