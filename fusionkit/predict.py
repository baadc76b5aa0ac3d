"""Score utterances with a trained checkpoint: ``python -m fusionkit.predict CHECKPOINT --text "…"``.

Prints one score per ``--text`` (about −3 = very negative … +3 = very positive). Nonverbal features can be
given as ``.npy`` files of shape ``(n_words, d)`` (one row per whitespace-separated word); without them the
audio/visual channels are zeros and a warning says so.
"""
from __future__ import annotations

import sys
import warnings

from fusionkit.cli import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog="python -m fusionkit.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a best/ checkpoint directory (or the run directory above it)")
    p.add_argument("--text", action="append", required=True, help="utterance to score (repeatable)")
    p.add_argument("--acoustic", default=None, help=".npy file (n_words, d_acoustic) for a single --text")
    p.add_argument("--visual", default=None, help=".npy file (n_words, d_visual) for a single --text")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import numpy as np

    from fusionkit.inference import load
    from fusionkit.training.checkpoint import CheckpointError

    try:
        if (args.acoustic or args.visual) and len(args.text) != 1:
            raise ValueError("--acoustic/--visual describe one utterance: pass a single --text with them")
        feats = {}
        for k in ("acoustic", "visual"):
            path = getattr(args, k)
            try:
                feats[k] = None if path is None else np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"--{k} {path!r}: {e}; pass a numeric .npy array of shape (n_words, d)") from None
        model = load(args.checkpoint, device=args.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if len(args.text) == 1:
                scores = [model.predict(args.text[0], **feats)]
            else:
                scores = model.predict(list(args.text), batch=True)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for text, score in zip(args.text, scores):
        print(f"{score:.4f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
