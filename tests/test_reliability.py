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


# -- class 2: checksummed checkpoints, exact fallback -----------------------------------------------------------
import shutil  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fusionkit  # noqa: E402
from fusionkit.training import TrainConfig, integrity, train_and_evaluate  # noqa: E402
from fusionkit.training.checkpoint import CheckpointError  # noqa: E402

ENGINE = dict(seed=0, epochs=2, batch_size=8, quiet=True, device="cpu", num_threads=1)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0)


def tiny():
    from fusionkit.testing import tiny_bert_config

    return {"bert_config": tiny_bert_config()}


def _interrupt(data, out, *, at_step: int, **config):
    def stop(info):
        if info["step"] == at_step:
            raise Stop
    with pytest.raises(Stop):
        train_and_evaluate("text", data, TrainConfig(**ENGINE, out_dir=out, **config), tiny(), on_step=stop)
    return out


@pytest.fixture(scope="module")
def engine_runs(data, tmp_path_factory):
    """An uninterrupted reference, a run stopped at the first step of epoch 2 (its last save is the end of epoch 1,
    which improved: best/ and last/ hold the same weights), and one stopped mid-epoch 2 (last/ ≠ best/)."""
    root = tmp_path_factory.mktemp("engine")
    reference = train_and_evaluate("text", data, TrainConfig(**ENGINE, out_dir=root / "ref"), tiny())
    steps = reference.history[0]["step"]  # batches per epoch
    assert steps >= 2
    epoch_end = _interrupt(data, root / "epoch_end", at_step=steps + 1)
    mid = _interrupt(data, root / "mid", at_step=steps + 2, save_every=1)  # last save: step steps + 1
    return {"reference": reference, "epoch_end": epoch_end, "mid": mid}


def damage(path, offset: int | None = None, length: int = 1) -> None:
    """Zero ``length`` bytes (xor 0xFF when they are zero already) from ``offset`` (default: the middle)."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    for i in range(offset, min(offset + length, len(data))):
        data[i] = 0 if data[i] else 0xFF
    path.write_bytes(bytes(data))


def test_every_checkpoint_file_has_a_checksum_and_best_equals_last_after_an_improving_epoch(engine_runs):
    out = engine_runs["epoch_end"]
    files = [p for d in ("best", "last") for p in (out / d).iterdir() if not p.name.endswith(".sha256")]
    assert files and all(integrity.sidecar(p).is_file() and integrity.problem(p) is None for p in files)
    state = json.loads((out / "last/state.json").read_text())
    assert (state["run"]["epoch"], state["run"]["batches_done"], state["run"]["best_epoch"]) == (1, 0, 1)
    last_model = out / "last" / state["files"]["model"]
    assert integrity.sha256_file(last_model) == integrity.sha256_file(out / "best/model.safetensors") \
        == state["best_sha256"] == state["sha256"][state["files"]["model"]]


@pytest.mark.parametrize("which", ["best", "last"])
def test_damaged_weights_are_restored_from_the_exact_copy_and_the_run_resumes_identically(
        engine_runs, data, tmp_path, capsys, which):
    out = tmp_path / "run"
    shutil.copytree(engine_runs["epoch_end"], out)
    state = json.loads((out / "last/state.json").read_text())
    target = out / "best/model.safetensors" if which == "best" else out / "last" / state["files"]["model"]
    damage(target, length=4096)
    resumed = train_and_evaluate("text", data, TrainConfig(**ENGINE, out_dir=out, resume=True), tiny())
    err = capsys.readouterr().err
    assert f"{target} failed its checksum" in err and "restored from it" in err
    assert resumed.test == engine_runs["reference"].test and resumed.best_epoch == engine_runs["reference"].best_epoch


@pytest.mark.parametrize("which", ["best", "optim", "state"])
def test_damaged_file_without_an_exact_copy_is_refused_naming_it(engine_runs, data, tmp_path, which):
    out = tmp_path / "run"
    shutil.copytree(engine_runs["mid"], out)
    state = json.loads((out / "last/state.json").read_text())
    assert state["run"]["batches_done"] > 0  # mid-epoch: last/ holds other weights than best/
    target = {"best": out / "best/model.safetensors", "optim": out / "last" / state["files"]["state"],
              "state": out / "last/state.json"}[which]
    damage(target, offset=len(target.read_bytes()) - 3 if which == "state" else None)
    before = tree_hash(out)
    with pytest.raises(CheckpointError, match=f"{target}' is damaged"):
        train_and_evaluate("text", data, TrainConfig(**ENGINE, out_dir=out, resume=True), tiny())
    assert tree_hash(out) == before  # refused before anything was written


WEIGHT_MUTANTS = 60


@pytest.mark.slow
@settings(max_examples=WEIGHT_MUTANTS, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255), which=st.sampled_from(["best", "last"]))
def test_one_corrupted_byte_anywhere_is_refused_or_replaced_by_the_exact_copy(engine_runs, tmp_path_factory,
                                                                            where, mask, which):
    """Any byte of either weight file, flipped: loading it is refused, or (epoch-end checkpoint) reads the
    byte-identical other copy — never the damaged bytes."""
    out = tmp_path_factory.mktemp("mut") / "run"
    shutil.copytree(engine_runs["epoch_end"], out)
    state = json.loads((out / "last/state.json").read_text())
    best, last = out / "best/model.safetensors", out / "last" / state["files"]["model"]
    target, other = (best, last) if which == "best" else (last, best)
    raw = bytearray(target.read_bytes())
    raw[int(where * len(raw))] ^= mask
    target.write_bytes(bytes(raw))
    assert integrity.problem(target) is not None
    chosen = integrity.verify_or_fallback(target, [other], [], restore=False, log=lambda m: None)
    assert chosen == other and integrity.problem(other) is None
    (other).unlink()  # without the copy: one CheckpointError naming the file
    with pytest.raises(CheckpointError, match="is damaged"):
        integrity.verify_or_fallback(target, [other], [], restore=False, log=lambda m: None)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_fusionkit_load_refuses_a_corrupted_weight_file(finished, tmp_path_factory, where, mask):
    best = tmp_path_factory.mktemp("load") / "best"
    shutil.copytree(finished / "text/seed0/best", best)
    raw = bytearray((best / "model.safetensors").read_bytes())
    raw[int(where * len(raw))] ^= mask
    (best / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is damaged"):
        fusionkit.load(best)


def test_resume_refuses_a_finished_run_with_damaged_weights(finished, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    damage(out / "text/seed0/best/model.safetensors", length=1 << 16)
    before = tree_hash(out)
    assert bench.main([*SMOKE, "--out", str(out), "--resume"]) == 2
    line = one_error(capsys)
    assert "text/seed0/best/model.safetensors' is damaged" in line
    assert tree_hash(out) == before  # no table was published from it


def test_resume_with_a_damaged_mid_run_best_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*SMOKE[:SMOKE.index("--epochs")], *SMOKE[SMOKE.index("--epochs") + 2:], "--epochs", "2",
            "--out", str(out)]
    import fusionkit.training.engine as engine

    real = engine._write_outputs

    def crash(*a, **k):
        raise KeyboardInterrupt("stopped for the test")
    engine._write_outputs = crash
    try:
        assert bench.main(argv) == 130
    finally:
        engine._write_outputs = real
    capsys.readouterr()
    state = json.loads((out / "text/seed0/last/state.json").read_text())
    assert state["run"]["finished"] and "model" not in state["files"]  # no exact copy of best/ remains
    damage(out / "text/seed0/best/model.safetensors", length=1 << 16)
    assert bench.main([*argv, "--resume"]) == 2
    assert "best/model.safetensors' is damaged" in one_error(capsys)
    assert not (out / "results.json").exists()


# -- class 3: a full disk during every kind of write ------------------------------------------------------------
import errno  # noqa: E402

WRITE_KINDS = ["run.json", "model-", "optim-", "state.json", "model.safetensors", "model.json", "log.jsonl",
               "result.json", "test_predictions.csv", "curve.png", "results.json", "results.md", ".benchmarks.lock",
               "sha256"]
FAST_KINDS = {"state.json", "model.safetensors", "results.json", "curve.png"}


def _disk_fills_at(monkeypatch, kind: str) -> list:
    """From the first write of a file of ``kind`` on, every write fails with ENOSPC (the disk stays full)."""
    real_write, full = os.write, []

    def name_of(fd):
        try:
            return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return ""

    def write(fd, data):
        name = name_of(fd)
        if fd > 2 and (full or (kind in name if kind == "sha256" else name.startswith("." + kind) or name == kind)):
            full.append(name)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)
    if kind == "curve.png":  # matplotlib writes through Python file objects: fail its savefig
        from matplotlib.figure import Figure

        def savefig(self, fname, *a, **k):
            open(fname, "wb").write(b"partial")
            full.append(str(fname))
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Figure, "savefig", savefig)
    return full


@pytest.mark.parametrize("kind", [k if k in FAST_KINDS else pytest.param(k, marks=pytest.mark.slow)
                                  for k in WRITE_KINDS])
def test_full_disk_is_one_error_line_and_resume_finishes(finished, tmp_path, capsys, monkeypatch, kind):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        full = _disk_fills_at(m, kind)
        code = bench.main([*SMOKE, "--out", str(out)])
    assert full, f"no {kind} write happened"
    assert code == 1
    line = one_error(capsys)
    assert "no space left writing" in line and "--resume" in line
    if kind not in ("sha256", "model-", "optim-"):
        assert kind.strip(".") in line
    if kind not in ("curve.png", ".benchmarks.lock"):
        assert "bytes needed" in line or "KiB needed" in line or "MiB needed" in line
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporary file left
    assert bench.main([*SMOKE, "--out", str(out), "--resume"]) == 0  # space freed: --resume finishes
    capsys.readouterr()
    assert (out / "results.json").read_bytes() == (finished / "results.json").read_bytes()


def test_full_disk_while_writing_the_data_cache_warns_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))

    def savez(file, *a, **k):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", savez)
    with pytest.warns(UserWarning, match="could not write the data cache.*no space left.*continuing without it"):
        assert bench.main([*SMOKE, "--out", str(tmp_path / "out")]) == 0
    assert not list((tmp_path / "cache").iterdir())  # the partial temporary file was removed


# -- class 7 and 8: inference API, signals, orphans ------------------------------------------------------------
import signal  # noqa: E402
import warnings  # noqa: E402


@pytest.fixture(scope="module")
def predictor(finished):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fusionkit.load(finished / "text/seed0")


def test_predict_one_string_with_batch_true_returns_a_list(predictor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = predictor.predict("a fine film")
        batch = predictor.predict("a fine film", batch=True)
    assert isinstance(one, float) and isinstance(batch, list) and batch == [one]


def test_lone_surrogate_is_one_clear_error(predictor, finished, capsys):
    from fusionkit import predict

    with pytest.raises(ValueError, match=r"word 1 .*lone surrogate.*errors='replace'"):
        predictor.predict("good \udce9 film")
    assert predict.main([str(finished / "text/seed0"), "--text", "good \udce9 film"]) == 2
    assert "lone surrogate" in one_error(capsys)


def _signal_during_training(monkeypatch, *signals):
    """Deliver ``signals`` (in order) from inside the first training step's loss bookkeeping."""
    from fusionkit.training import engine

    real, sent = engine._LossSums.flush, []

    def flush(self, *a, **k):
        if not sent:
            sent.append(True)
            for sig in signals:
                signal.raise_signal(sig)
        return real(self, *a, **k)
    monkeypatch.setattr(engine._LossSums, "flush", flush)


@pytest.mark.parametrize("signals,status,words", [
    ((signal.SIGTERM,), 143, "interrupted at epoch 1"), ((signal.SIGINT,), 130, "interrupted at epoch 1"),
    ((signal.SIGINT, signal.SIGINT), 130, "a second SIGINT stopped the run at once"),
])
def test_signals_exit_128_plus_signal_with_one_message(finished, tmp_path, monkeypatch, capsys, signals, status,
                                                       words):
    out = tmp_path / "out"
    argv = [*SMOKE, "--out", str(out)]
    with monkeypatch.context() as m:
        _signal_during_training(m, *signals)
        assert bench.main(argv) == status
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("interrupted:")]
    assert words in line and line.count("resume") == 1 and "Traceback" not in err
    assert bench.main([*argv, "--resume"]) == 0
    assert (out / "results.json").read_bytes() == (finished / "results.json").read_bytes()


def test_orphan_temporary_files_are_removed_on_the_next_start(finished, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    orphans = [out / "text/seed0/.result.json.k3j_x9q2.tmp", out / "text/seed0/last/.state.json.a1b2c3d4.tmp",
               out / "text/seed0/.curve.png.tmp.png"]
    for p in orphans:
        p.write_bytes(b"partial")
    keep = out / ".notes.tmp"  # not a name our writers use: left alone
    keep.write_text("mine")
    assert bench.main([*SMOKE, "--out", str(out), "--resume"]) == 0
    assert "[cleanup] removed 3 temporary file(s)" in capsys.readouterr().err
    assert not any(p.exists() for p in orphans) and keep.exists()


# -- class 5 and 6: readers and the restricted unpickler --------------------------------------------------------
import pickle  # noqa: E402

import numpy as np  # noqa: E402

from fusionkit.data import DataError  # noqa: E402
from fusionkit.data.errors import LoadReport  # noqa: E402
from fusionkit.data.pickles import read_mag_pickle, read_mmsa_pickle, safe_load  # noqa: E402


def _mag(ids, words=None, value=0.5):
    def example(i, seg):
        w = words if words is not None else ["good", "film"]
        return ((w, np.full((len(w), 3), value, np.float32), np.zeros((len(w), 2), np.float32)), np.array([[1.0]]),
                seg)
    return {s: [example(i, seg) for i, seg in enumerate(ids)] for s in ("train", "dev", "test")}


@pytest.mark.parametrize("value", [1e38, -2e6, np.float32(3.4e38)])
def test_huge_finite_feature_is_refused_naming_file_segment_and_column(tmp_path, value):
    path = tmp_path / "mag.pkl"
    data = _mag(["a_1"])
    data["dev"] = [((["ok"], np.array([[0.0, value, 1.0]], np.float32), np.zeros((1, 2), np.float32)),
                    np.array([[1.0]]), "b_1")]
    data["test"] = [((["ok"], np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32)), np.array([[1.0]]), "c_1")]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"mag\.pkl.*dev.*b_1.*visual feature column 1 holds .*beyond ±1e\+06"):
        read_mag_pickle(path, report=LoadReport())


@pytest.mark.parametrize("ids,words,message", [
    ([None], None, "segment id None is missing"), ([7], None, "segment id 7 is int, not text"),
    (["a", "a"], None, "duplicate segment_id"), (["a"], ["good", 3], "word 1 is int 3, not text"),
    ([""], None, "segment id is empty"),
])
def test_mag_pickle_ids_and_words_follow_the_csv_rules(tmp_path, ids, words, message):
    path = tmp_path / "mag.pkl"
    data = _mag(ids, words)
    data["dev"] = [((["x"], np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32)), np.array([[1.0]]), "d")]
    data["test"] = [((["x"], np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32)), np.array([[1.0]]), "t")]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=message):
        read_mag_pickle(path, report=LoadReport())


def test_mmsa_duplicate_ids_across_splits_are_refused(tmp_path):
    def split(ids):
        n = len(ids)
        return {"raw_text": ["a b"] * n, "id": np.array(ids), "audio": np.zeros((n, 4, 2), np.float32),
                "vision": np.zeros((n, 4, 3), np.float32), "regression_labels": np.zeros(n, np.float32)}
    path = tmp_path / "mmsa.pkl"
    path.write_bytes(pickle.dumps({"train": split(["v$_$1"]), "valid": split(["v$_$2"]), "test": split(["v$_$1"])}))
    with pytest.raises(DataError, match=r"test.*v_1.*duplicate segment_id"):
        read_mmsa_pickle(path, report=LoadReport())


class _Hostile:
    def __init__(self, *call):
        self.call = call

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize("payload,message", [
    (_Hostile(bytes, (1 << 40,)), "more than"), (_Hostile(bytearray, (1 << 33,)), "more than"),
    (_Hostile(int, ("9" * 10_000,)), "corrupt pickle"), (_Hostile(complex, ("nope",)), "corrupt pickle"),
    (_Hostile(float, ([],)), "corrupt pickle"), (_Hostile(range, (10 ** 12,)), "refusing to load builtins.range"),
    (_Hostile(np.core.multiarray._reconstruct, (np.ndarray, (1 << 40,), b"b")), "more than"),
    (_Hostile(dict, ([1, 2, 3],)), "corrupt pickle"),
])
def test_allowed_callables_cannot_escape_or_allocate(tmp_path, payload, message):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"train": [payload]}, protocol=4))
    with pytest.raises(DataError, match=message):
        safe_load(path)


def test_reader_repairs_are_in_the_log_and_the_results(finished, tmp_path, capsys):
    results = json.loads((finished / "results.json").read_text())
    assert results["data_report"]["dropped_total"] > 0  # --max-samples 16 left segments out
    md = (finished / "results.md").read_text()
    assert "Data changed by the readers:" in md and "left out (max samples: test " in md
    report = LoadReport()
    report.fallbacks["transcript_for_empty_words"] += 2  # the .csd / CSV fallback to the transcript
    report.sanitized_nonfinite["train"] += 5
    assert report.describe() == ["5 NaN/inf feature value(s) set to 0 (train 5)", "2 × transcript for empty words"]
    assert bench.data_report_lines(report.to_dict())[0].startswith("Data changed by the readers: 5 NaN")
