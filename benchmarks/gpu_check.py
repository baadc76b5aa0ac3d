"""The GPU check behind ``benchmarks/gpu_check.sh``: ``python -m benchmarks.gpu_check [--out DIR]``.

On a CUDA machine, in at most about 8 minutes, it runs

1. the tests marked ``gpu`` (``pytest -m gpu tests``);
2. ``benchmarks.speed`` with a randomly initialised BERT-base configuration (12 layers, hidden 768; nothing is
   downloaded) for ``text``, ``mhmf`` (paper width: ``d_fusion`` 768, 12 heads) and ``mag``, at ``bf16`` and
   at ``fp32``;
3. one short ``benchmarks.run`` epoch of ``mhmf`` (bundled MiniLM, ``--max-train-samples``),

each as a subprocess with its own time limit, and writes everything into one JSON, ``OUT/gpu_check.json``:
``{"device", "torch", "steps": {name: {"rc", "seconds", "command", "tail"}}, "pytest", "speed": {precision:
speed.json}, "run": results.json, "ok"}``. ``--device cpu --smoke`` runs the same steps with a tiny random BERT
and a few batches on CPU (how the test suite checks this script without a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("bf16", "fp32")
SPEED_MODELS = "mhmf,mag"  # text is always timed: it is the reference
# per-step limits (seconds); their sum stays under 8 minutes
LIMITS = {"pytest": 90, "speed_bf16": 150, "speed_fp32": 150, "run": 80}
TAIL_CHARS = 3000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gpu_check", help="output directory (default: runs/gpu_check)")
    p.add_argument("--device", default="cuda", help="device (default: cuda)")
    p.add_argument("--smoke", action="store_true", help="tiny random BERT and a few batches (the CPU test)")
    return p


def _dataset() -> list[str]:
    """mosi-sim when a data root is known (``FUSIONKIT_DATA`` or ``shared/data`` next to the code), else
    synthetic."""
    root = os.environ.get("FUSIONKIT_DATA") or (str(ROOT / "shared" / "data")
                                                if (ROOT / "shared" / "data" / "mosi").is_dir() else None)
    return ["--dataset", "mosi-sim", "--data-root", root] if root else ["--dataset", "synthetic"]


def plan(out: Path, device: str, smoke: bool) -> dict:
    """``{step name: argv}`` of the check."""
    py = sys.executable
    if smoke:
        speed_size = ["--tiny-bert", "--dataset", "synthetic", "--batch-size", "4", "--steps", "2", "--warmup", "1",
                      "--epoch-samples", "8", "--infer-utterances", "2", "--flop-batches", "1",
                      "--checkpoint-models", "mhmf", "--threads", "1"]
        run_size = ["--tiny-bert", "--dataset", "synthetic", "--max-samples", "16", "--batch-size", "8",
                    "--threads", "1"]
        pytest_args = ["-m", "gpu", "tests/test_gpu.py"]
    else:
        speed_size = ["--bert-base", *_dataset(), "--batch-size", "32", "--steps", "20", "--warmup", "3",
                      "--epoch-samples", "640", "--infer-utterances", "20", "--flop-batches", "2"]
        run_size = [*_dataset(), "--max-train-samples", "640"]
        pytest_args = ["-m", "gpu", "tests"]
    steps = {"pytest": [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]}
    for precision in PRECISIONS:
        steps[f"speed_{precision}"] = [py, "-m", "benchmarks.speed", "--device", device, "--precision", precision,
                                       "--models", SPEED_MODELS, *speed_size, "--out", str(out / f"speed_{precision}")]
    steps["run"] = [py, "-m", "benchmarks.run", "--models", "mhmf", "--seeds", "1", "--epochs", "1", "--device",
                    device, "--quiet", *run_size, "--out", str(out / "run")]
    return steps


def run_step(argv: list, limit: float, env: dict) -> dict:
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        output = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) \
            + f"\n[timed out after {limit:.0f} s]"
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1), "command": " ".join(map(str, argv)),
            "tail": output[-TAIL_CHARS:]}


def _pytest_summary(tail: str) -> dict:
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    return counts


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    report: dict = {"device": args.device, "smoke": args.smoke, "torch": torch.__version__,
                    "cuda_available": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "steps": {}}
    for name, step_argv in plan(out, args.device, args.smoke).items():
        print(f"[gpu_check] {name}: {' '.join(map(str, step_argv))}", file=sys.stderr, flush=True)
        report["steps"][name] = result = run_step(step_argv, LIMITS[name], env)
        print(f"[gpu_check] {name}: rc {result['rc']} in {result['seconds']} s", file=sys.stderr, flush=True)
    report["pytest"] = _pytest_summary(report["steps"]["pytest"]["tail"])
    report["speed"] = {p: _read_json(out / f"speed_{p}" / "speed.json") for p in PRECISIONS}
    report["run"] = _read_json(out / "run" / "results.json")
    # pytest exits 5 when every collected test was deselected/skipped (no GPU in the smoke run)
    report["ok"] = all(s["rc"] == 0 or (name == "pytest" and s["rc"] == 5) for name, s in report["steps"].items())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'gpu_check.json'} (ok: {report['ok']})", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
