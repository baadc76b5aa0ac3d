"""``benchmarks.run --workers N``: claims, takeover of a dead worker's run, equality with one process."""
from __future__ import annotations

import json
import os
import time

import pytest

import benchmarks.run as bench
from benchmarks import workers


def test_claim_is_exclusive_and_released(tmp_path):
    run_dir = tmp_path / "text/seed0"
    first = workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=0)
    assert first is not None and first[1] is False
    assert workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=1) is None  # live claim
    with first[0]:
        (run_dir / "result.json").write_text("{}")
    assert not (run_dir / workers.CLAIM).exists()
    assert workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=1) is None  # finished


def test_stale_claim_is_taken_over_once(tmp_path):
    run_dir = tmp_path / "tfn/seed1"
    claim, _ = workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=0)
    old = time.time() - 120  # its worker died two minutes ago: no heartbeat since
    os.utime(claim.path, (old, old))
    taken = workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=1)
    assert taken is not None and taken[1] is True
    assert json.loads((run_dir / workers.CLAIM).read_text())["worker"] == 1
    assert workers.try_claim(run_dir, heartbeat=1.0, grace=30.0, worker=2) is None  # the new claim is live


def test_work_runs_every_task_once(tmp_path):
    tasks = [("m", s, tmp_path / f"m/seed{s}") for s in range(3)]
    ran = []

    def run(i, took_over):
        ran.append(i)
        (tasks[i][2] / "result.json").write_text("{}")

    assert workers.work(tasks, run, heartbeat=0.1, grace=1.0, worker=0) == 3
    assert sorted(ran) == [0, 1, 2]
    assert workers.work(tasks, run, heartbeat=0.1, grace=1.0, worker=0) == 0


def test_strip_worker_flags():
    assert workers.strip_worker_flags(["--models", "a", "--workers", "2", "--workers=3", "--seeds", "1"]) == \
        ["--models", "a", "--seeds", "1"]


@pytest.mark.slow
def test_two_workers_equal_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    common = ["--models", "text,tfn", "--dataset", "synthetic", "--tiny-bert", "--seeds", "2", "--epochs", "1",
              "--max-samples", "24", "--quiet"]
    assert bench.main([*common, "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    assert bench.main([*common, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    one = json.loads((tmp_path / "one/results.json").read_text())
    two = json.loads((tmp_path / "two/results.json").read_text())
    assert one["runs"] == two["runs"] and one["statistics"] == two["statistics"]
    assert not list((tmp_path / "two").glob("*/seed*/.claim"))


@pytest.mark.slow
def test_sigkilled_grid_worker_run_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "FUSIONKIT_CACHE": str(tmp_path / "cache")}
    common = ["--models", "text,tfn", "--dataset", "synthetic", "--tiny-bert", "--seeds", "2", "--epochs", "2",
              "--max-samples", "48", "--quiet"]
    cmd = [sys.executable, "-m", "benchmarks.run", *common, "--workers", "2", "--heartbeat", "0.5", "--grace", "8",
           "--out", str(tmp_path / "two")]
    parent = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 240
    try:
        while killed is None and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            for claim in (tmp_path / "two").glob("*/seed*/.claim"):
                try:
                    pid = json.loads(claim.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                os.kill(pid, signal.SIGKILL)
                killed = claim.parent
                break
        assert killed is not None, "no run was seen claimed"
        _, err = parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err[-2000:]
    two = json.loads((tmp_path / "two/results.json").read_text())
    assert len(two["runs"]) == 4 and (killed / "result.json").is_file()
    assert not list((tmp_path / "two").glob("*/seed*/.claim"))
    env_one = subprocess.run([sys.executable, "-m", "benchmarks.run", *common, "--threads", "1", "--out",
                              str(tmp_path / "one")], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert env_one.returncode == 0, env_one.stderr[-2000:]
    one = json.loads((tmp_path / "one/results.json").read_text())
    assert one["runs"] == two["runs"]


@pytest.mark.parametrize("codes", [[130, 0], [0, -15], [-2, -2]])
def test_parent_stops_when_a_worker_was_interrupted(tmp_path, monkeypatch, capsys, codes):
    """A worker stopped from outside (Ctrl-C, SIGTERM) stops the parent too: it does not go on to train that
    worker's runs itself, and it says once how to continue."""
    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(workers, "spawn", lambda argv, n, threads: list(codes))
    trained = []
    monkeypatch.setattr(bench, "run_one", lambda *a, **k: trained.append(a))
    status = bench.main(["--models", "text", "--dataset", "synthetic", "--tiny-bert", "--seeds", "2", "--epochs",
                         "1", "--max-samples", "24", "--quiet", "--workers", "2", "--out", str(tmp_path / "o")])
    assert status == 130 and trained == []
    err = capsys.readouterr().err
    assert err.count("interrupted:") == 1 and "--resume" in err


def test_a_grid_worker_leaves_the_interrupt_message_to_its_parent(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_main", interrupted)
    assert bench.main(["--grid-worker", "0"]) == 130
    assert "interrupted" not in capsys.readouterr().err
    assert bench.main(["--models", "text"]) == 130
    assert capsys.readouterr().err.count("interrupted:") == 1
