"""``python -m fusionkit extract`` and ``python -m fusionkit predict`` (see docs/extraction.md)."""
from __future__ import annotations

import sys

from fusionkit.cli import ArgumentParser, UsageError, run_cli


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = argv[0], argv[1:]
    return run_cli(_extract if command == "extract" else _predict, rest)


def _extract(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m fusionkit extract",
                       description="Word-aligned openSMILE (and OpenFace) features for a folder of clips.")
    p.add_argument("--audio", required=True, help="a clip or a directory of <segment_id>.wav/.flac (other "
                                                  "containers and video through ffmpeg)")
    p.add_argument("--words", required=True, help="word timings: CSV segment_id,word,start,end; a TimestampedWords "
                                                  ".csd; an aligner's JSON (WhisperX, whisper-timestamped, Gentle, "
                                                  "MFA) or a directory of <segment_id>.json")
    p.add_argument("--out", required=True, help="output directory (finished segments in it are reused)")
    p.add_argument("--openface", default=None, help="a directory of OpenFace FeatureExtraction <segment_id>.csv")
    p.add_argument("--feature-set", default="eGeMAPSv02", help="openSMILE feature set (default eGeMAPSv02)")
    p.add_argument("--feature-level", default="lld", choices=("lld", "lld_deltas"),
                   help="low-level descriptors (default) or with deltas")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate (default 16000)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--csv", action="store_true", help="also write the tables as CSV")
    p.add_argument("--pkl", default=None, metavar="SEGMENTS_CSV",
                   help="also write an MMSA-style aligned.pkl, labels and splits from this segment table")
    p.add_argument("--no-resume", action="store_true", help="redo every segment")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from fusionkit.extract.api import extract
    from fusionkit.extract.runner import ExtractError

    try:
        result = extract(audio=args.audio, words=args.words, out=args.out, openface=args.openface,
                         feature_set=args.feature_set, feature_level=args.feature_level, sample_rate=args.sample_rate,
                         workers=args.workers, csv=args.csv, pkl_segments=args.pkl, resume=not args.no_resume,
                         progress=not args.quiet)
    except ExtractError as e:
        raise UsageError(str(e)) from None
    counts = result.provenance["counts"]
    print(f"extracted {len(result.segments)} segment(s), {counts['words']} words ({result.reused} reused from an "
          f"earlier run) → {result.out}")
    for modality, tables in result.tables.items():
        if isinstance(tables, dict):
            dim = result.provenance["modalities"][modality]["dim"]
            print(f"  {modality}: {tables['words']} ({dim}-d, word level), {tables['segments']} (segment level); "
                  f"{counts.get(f'empty_words_{modality}', 0)} word(s) without frames (zeros, n_frames 0)")
    print(f"  provenance: {result.out / 'provenance.json'}; words per segment: {result.out / 'segments_words.csv'}")
    for message in result.failed.values():
        print(f"skipped: {message}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} segment(s) skipped; listed in {result.out / 'errors.json'}", file=sys.stderr)
        return 1
    return 0


def _predict(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m fusionkit predict",
                       description="Score new clips with a run trained on extracted features.")
    p.add_argument("run_dir", help="a run directory of python -m benchmarks.run, e.g. RUN/tfn/seed0")
    p.add_argument("--audio", required=True, help="a clip or a directory of <segment_id>.wav")
    p.add_argument("--words", required=True, help="its word timings (CSV, JSON, .csd or a directory)")
    p.add_argument("--openface", default=None, help="OpenFace CSV (or directory) when the model uses video")
    p.add_argument("--feature-set", default=None, help="checked against the training features (refused if other)")
    p.add_argument("--provenance", default=None, help="the training extraction's provenance.json, when the feature "
                                                      "tables moved since training")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from fusionkit.extract.predict import predict_clips
    from fusionkit.extract.runner import ExtractError
    from fusionkit.training.checkpoint import CheckpointError

    try:
        scores, failed = predict_clips(args.run_dir, audio=args.audio, words=args.words, openface=args.openface,
                                       feature_set=args.feature_set, provenance=args.provenance, device=args.device)
    except (ExtractError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    for seg, score, _ in scores:
        print(f"{seg}\t{score:.4f}")
    for message in failed.values():
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0
