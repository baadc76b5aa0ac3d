"""One writer per output directory, and a tokenized-data cache that several processes may fill at once."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import benchmarks.run as bench
from benchmarks.lock import LOCK_NAME, DirectoryLock

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--models", "text", "--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8",
         "--max-samples", "16", "--tiny-bert", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_CACHE", str(cache_dir))


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)


def _error(capsys) -> str:
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    return line


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_held_out_dir_is_refused_with_the_holder_named(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with DirectoryLock(out, ["python -m benchmarks.run --models mhmf"]):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["started"] <= time.time()
        assert bench.main([*SMOKE, "--out", str(out)]) == 2
        line = _error(capsys)
        assert f"pid {os.getpid()}" in line and "python -m benchmarks.run --models mhmf" in line
        assert "in use by another benchmarks.run" in line and "another --out" in line
        assert os.listdir(out) == [LOCK_NAME]  # the refused run wrote nothing
    assert not (out / LOCK_NAME).exists()  # released: the holder removes its lock file


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main([*SMOKE, "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    pid = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "pid_start": "1", "host": "h", "started": 1.0,
                                             "command": "python -m benchmarks.run (crashed)"}))
    with pytest.warns(RuntimeWarning, match=f"taking over the stale lock .*pid {pid}.*crashed"):
        assert bench.main([*SMOKE, "--out", str(out), "--resume"]) == 0
    assert "[skip] text seed 0" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before and not (out / LOCK_NAME).exists()


WAITER = textwrap.dedent('''
    """benchmarks.run whose first run waits for a file, so that the lock is held while the test looks."""
    import os, sys, time
    from pathlib import Path

    import benchmarks.run

    go, original = Path(sys.argv[1]), benchmarks.run.run_one

    def run_one_when_told(*args, **kwargs):
        Path(str(go) + ".ready").write_text(str(os.getpid()))
        while not go.exists():
            time.sleep(0.05)
        return original(*args, **kwargs)

    benchmarks.run.run_one = run_one_when_told
    sys.exit(benchmarks.run.main(sys.argv[2:]))
''')


@pytest.mark.slow
def test_second_process_on_a_busy_out_exits_2_at_once_and_the_first_finishes(tmp_path, cache_dir):
    out, go = tmp_path / "out", tmp_path / "go"
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    first = subprocess.Popen([sys.executable, str(script), str(go), *SMOKE, "--out", str(out)], cwd=ROOT,
                             env=_env(FUSIONKIT_CACHE=str(cache_dir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 240
        while not Path(str(go) + ".ready").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.1)
        started = time.time()
        second = subprocess.run([sys.executable, "-m", "benchmarks.run", *SMOKE, "--out", str(out)], cwd=ROOT,
                                env=_env(FUSIONKIT_CACHE=str(cache_dir)), capture_output=True, text=True,
                                timeout=240)
        assert first.poll() is None  # refused while the first still holds --out: it did not wait
        assert second.returncode == 2, second.stderr
        lines = [x for x in second.stderr.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "Traceback" not in second.stderr
        assert time.time() - started < 120
    finally:
        go.write_text("go")
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == ["text"] and (out / "text/seed0/result.json").is_file()
    assert not (out / LOCK_NAME).exists()


FILLER = textwrap.dedent('''
    import hashlib, sys, time
    from pathlib import Path

    from fusionkit.data import load_splits

    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.01)
    data = load_splits("synthetic", max_samples=int(sys.argv[3]))
    h = hashlib.sha256()
    for split, ds in sorted(data.splits.items()):
        for name, arr in sorted(ds.arrays().items()):
            h.update(f"{split}/{name}".encode())
            h.update(arr.tobytes())
    print(h.hexdigest())
''')


def _digest(data) -> str:
    h = hashlib.sha256()
    for split, ds in sorted(data.splits.items()):
        for name, arr in sorted(ds.arrays().items()):
            h.update(f"{split}/{name}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_two_processes_filling_the_data_cache_at_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    script, go = tmp_path / "filler.py", tmp_path / "go"
    script.write_text(FILLER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"ready{k}"), str(go), "40"], cwd=ROOT,
                              env=_env(FUSIONKIT_CACHE=str(cache)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    deadline = time.time() + 240
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.05)
    go.write_text("go")  # both are past their imports: they tokenize and write the same entry together
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    digests = {o[0].strip() for o in outputs}
    assert len(digests) == 1
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].endswith(".npz"), files  # one complete entry, no temporary file left
    monkeypatch.setenv("FUSIONKIT_CACHE", str(cache))
    import fusionkit.data.api as api
    from fusionkit.data import cache as cache_mod

    assert cache_mod.load(files[0][: -len(".npz")]) is not None  # a complete, readable entry

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache entry was not used")

    monkeypatch.setattr(api, "_read_segments", no_reading)
    assert _digest(api.load_splits("synthetic", max_samples=40)) == digests.pop()  # read back from the cache
