"""benchmarks/gpu_check.sh: its steps run (tiny, on CPU) and land in one JSON."""
import json
import subprocess
from pathlib import Path

import pytest

import benchmarks.gpu_check as gpu_check

ROOT = Path(__file__).resolve().parent.parent


def test_plan_covers_the_issue_and_fits_eight_minutes(tmp_path):
    steps = gpu_check.plan(tmp_path, "cuda", smoke=False)
    assert set(steps) == {"pytest", "speed_bf16", "speed_fp32", "run"}
    assert steps["pytest"][-3:] == ["-m", "gpu", "tests"]
    for precision in ("bf16", "fp32"):
        argv = steps[f"speed_{precision}"]
        assert "--bert-base" in argv and argv[argv.index("--precision") + 1] == precision
        assert argv[argv.index("--models") + 1] == "mhmf,mag" and argv[argv.index("--device") + 1] == "cuda"
    run = steps["run"]
    assert run[run.index("--epochs") + 1] == "1" and "--max-train-samples" in run
    assert sum(gpu_check.LIMITS.values()) <= 8 * 60


@pytest.mark.slow
def test_smoke_run_on_cpu_writes_one_json(tmp_path):
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--smoke", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0 and report["ok"], json.dumps(report["steps"], indent=1)[-3000:]
    assert set(report["steps"]) == {"pytest", "speed_bf16", "speed_fp32", "run"}
    for precision in ("bf16", "fp32"):
        speed = report["speed"][precision]
        assert speed["machine"]["precision"] == precision and speed["machine"]["device"] == "cpu"
        assert {"mhmf_efficiency", "mag_efficiency", "mhmf_step_ratio"} <= set(speed)
    assert report["run"]["runs"][0]["model"] == "mhmf"
