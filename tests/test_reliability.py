"""Nothing lost, nothing silently wrong: an --out holding runs is never replaced by accident, checkpoints are
checksummed, a full disk is one error line and stays resumable."""
import hashlib
import json
import os

import pytest

import benchmarks.run as bench

SMOKE = ["--models", "text", "--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8",
         "--max-samples", "16", "--tiny-bert", "--quiet", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def tree_hash(root) -> dict:
    """Every file under ``root`` with its sha256 and mode (what must not change)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mode)
    return out


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "out"
    assert bench.main([*SMOKE, "--out", str(out)]) == 0
    return out


# -- class 1: finished runs are never overwritten by accident -------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--epochs", "2"], ["--lr", "0.5"], ["--seeds", "2"]],
                         ids=["same", "epochs", "lr", "more-seeds"])
def test_rerun_without_resume_is_refused_and_changes_nothing(finished, capsys, extra):
    before = tree_hash(finished)
    assert bench.main([*SMOKE, *extra, "--out", str(finished)]) == 2
    line = one_error(capsys)
    assert "--resume" in line and "--overwrite" in line and "new --out" in line and "text/seed0" in line
    assert tree_hash(finished) == before


def test_interrupted_run_and_bare_table_are_protected(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "text" / "seed0" / "last").mkdir(parents=True)
    (out / "text" / "seed0" / "last" / "state.json").write_text("{}")
    assert bench.main([*SMOKE, "--out", str(out)]) == 2
    assert "interrupted run" in one_error(capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text("{}")
    assert bench.main([*SMOKE, "--out", str(other)]) == 2
    assert "results table" in one_error(capsys)


def test_overwrite_replaces_and_contradicts_resume(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main([*SMOKE, "--out", str(out)]) == 0
    assert bench.main([*SMOKE, "--out", str(out), "--overwrite", "--resume"]) == 2
    assert "contradict" in one_error(capsys)
    first = json.loads((out / "text/seed0/result.json").read_text())
    assert bench.main([*SMOKE, "--epochs", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "text/seed0/result.json").read_text())["epochs_run"] == 2 != first["epochs_run"]
