"""``python -m fusionkit.data inspect|calibrate NAME_OR_PATH [--data-root DIR]``: JSON summaries of a dataset."""
from __future__ import annotations

import json
import sys

import numpy as np

from fusionkit.cli import ArgumentParser, UsageError, run_cli


def summary(loaded) -> dict:
    """Detected format, per-split counts, dims, label range, zero labels, sanitized and dropped counts."""
    info = loaded.info
    labels = np.concatenate([ds.labels for ds in loaded.splits.values()])
    report = info.report.to_dict()
    return {
        "dataset": info.name,
        "format": info.format,
        "simulated": info.simulated,
        "description": info.description,
        "splits": {name: len(ds) for name, ds in loaded.splits.items()},
        "d_acoustic": info.d_acoustic,
        "d_visual": info.d_visual,
        "modalities": ",".join(info.modalities),
        "channels": info.channel_kinds(),
        "feature_names": {c: (names if len(names) <= 8 else [*names[:8], f"… {len(names) - 8} more"])
                          for c, names in info.feature_names.items()},
        "sources": info.sources,
        "aligned": info.aligned,
        "label_range": [float(labels.min()), float(labels.max())] if len(labels) else None,
        "zero_labels": int(np.sum(labels == 0)),
        "sanitized_nonfinite": report["sanitized_nonfinite_total"],
        "sanitized_nonfinite_by_split": report["sanitized_nonfinite"],
        "dropped": report["dropped_total"],
        "dropped_reasons": report["dropped"],
        "fallbacks": report["fallbacks"],
        "truncated_to_max_seq_length": report["truncated"],
    }


def _summarise(args, features: dict) -> dict:
    from fusionkit.data.api import load_splits

    loaded = load_splits(args.dataset, data_root=args.data_root, tokenizer=args.tokenizer,
                         max_seq_length=args.max_seq_length, cache=not args.no_cache, features=features or None,
                         segment_features=args.segment_features)
    if args.command == "inspect":
        out = summary(loaded)
    else:
        from fusionkit.data.calibrate import calibration

        out = calibration(loaded)
        if loaded.info.format == "probe":  # the planted cue's read-out (fusionkit.data.probes)
            out["targets"] = "none: probe channels carry no label signal, only the planted cue (cue_readout)"
            from fusionkit.data.probes import cue_readout

            out["cue_readout"] = cue_readout(loaded.info.name, data_root=args.data_root,
                                             max_seq_length=args.max_seq_length)
    return out


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = ArgumentParser(prog="python -m fusionkit.data")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("inspect", "summarise a dataset as JSON"),
                       ("calibrate", "linear-probe Acc2 of the time-averaged nonverbal channels")):
        p = sub.add_parser(name, help=text)
        p.add_argument("dataset", help="a dataset name (synthetic, mosi, mosei, mosi-sim, mosei-sim, mosi-covarep) or a file "
                                          "path")
        p.add_argument("--data-root", default=None, help="data root (default: $FUSIONKIT_DATA or ./data)")
        p.add_argument("--tokenizer", default=None, help="text model name/path (default: bundled MiniLM)")
        p.add_argument("--max-seq-length", type=int, default=50)
        p.add_argument("--no-cache", action="store_true", help="neither read nor write the on-disk cache")
        p.add_argument("--features", action="append", default=[], metavar="MODALITY=PATH",
                       help="a segment-level feature table (CSV or .npz with segment_id) joined to the segment "
                            "table DATASET by id, e.g. acoustic=egemaps.csv; repeatable")
        p.add_argument("--segment-features", choices=("repeat", "step"), default="repeat",
                       help="segment vectors on every word piece (repeat, aligned) or as a one-step sequence (step)")
        p.add_argument("--cue-strength", type=float, default=None, metavar="X",
                       help="probe datasets only: generate them with this cue strength (latent standard deviations) "
                            "instead of the calibrated one")
    args = parser.parse_args(argv)
    features = {}
    for item in args.features:
        modality, sep, path = item.partition("=")
        if not sep or modality not in ("acoustic", "visual") or not path:
            raise UsageError(f"--features {item!r} is not MODALITY=PATH with MODALITY acoustic or visual")
        features[modality] = path
    from fusionkit.data.probes import PROBES, cue_strength

    if args.cue_strength is not None and args.dataset not in PROBES:
        raise UsageError(f"--cue-strength applies to the probe datasets ({', '.join(PROBES)}), not {args.dataset!r}")
    try:
        with cue_strength(args.cue_strength):
            out = _summarise(args, features)
    except (ValueError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
