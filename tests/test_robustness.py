"""Adversarial use of the public CLIs and API: bad inputs fail with one clear line, nothing written is lost.

CLI contract checked everywhere: exit status 2, exactly one stderr line starting ``error:``, no traceback, and
files that existed before the failing command are byte-identical afterwards. Training runs use the synthetic
dataset and the tiny random BERT (``--tiny-bert``); one uninterrupted run (``reference``) is shared by the
interruption, determinism, checkpoint and DDP tests.
"""
from __future__ import annotations

import ast
import csv
import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import SEGMENT_COLUMNS, content_rows, make_content, write_csd, write_mag_pickle, write_segments_csv

import benchmarks.run as bench
import fusionkit
from fusionkit import predict
from fusionkit.data import DataError, load_splits
from fusionkit.data.__main__ import main as data_cli
from fusionkit.encoders.bert import TextModelNotFound
from fusionkit.metrics import get_metric
from fusionkit.testing import random_batch, tiny_bert_config
from fusionkit.training import CheckpointError, TrainConfig, train_and_evaluate
from fusionkit.training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
# 32 training examples in batches of 8: 4 optimizer steps per epoch, 8 in all
RUN = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "2", "--batch-size", "8", "--max-samples", "32",
       "--device", "cpu", "--threads", "1", "--tiny-bert", "--quiet"]
TEXT_RUN = ["--models", "text", *RUN]
SUBPROCESS_TIMEOUT = 300


# -- helpers -----------------------------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def cli_error(capsys, main, argv) -> str:
    """Run a CLI ``main`` in-process; assert exit status 2 and one ``error:`` line, which is returned."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    return _one_error_line(err)


def subprocess_env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def snapshot(folder: Path) -> dict:
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_outputs(out: Path, model: str = "text") -> dict:
    """What a finished ``benchmarks.run`` must reproduce exactly (the log without its wall-clock seconds)."""
    seed_dir = out / model / "seed0"
    log = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
           for line in (seed_dir / "log.jsonl").read_text().splitlines()]
    return {"results.json": (out / "results.json").read_bytes(),
            "results.md": (out / "results.md").read_bytes(),
            "test_predictions.csv": (seed_dir / "test_predictions.csv").read_bytes(),
            "best/model.safetensors": (seed_dir / "best" / "model.safetensors").read_bytes(),
            "log": log}


@pytest.fixture(scope="module", autouse=True)
def isolated_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("FUSIONKIT_DATA", raising=False)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted ``benchmarks.run`` of the text model (2 epochs × 4 steps)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert bench.main([*TEXT_RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(reference):
    return reference / "text" / "seed0" / "best"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """One small file per kind of broken input (MAG-BERT pickles, .csd directories, segment CSVs)."""
    root = tmp_path_factory.mktemp("bad_data")

    def mag(name, edit=None, **content_kw):
        content = make_content(per_split=3, **content_kw)
        if edit is not None:
            edit(content)
        return write_mag_pickle(root / name, content)

    def second_train_segment(key, value):
        def edit(content):
            content["train"][1][key] = value
        return edit

    def no_words(content):
        seg = content["train"][0]
        seg["words"], seg["acoustic"], seg["visual"] = [], seg["acoustic"][:0], seg["visual"][:0]

    def nonfinite(content):
        content["train"][0]["acoustic"][0, :3] = [np.nan, np.inf, -np.inf]
        content["test"][1]["visual"][1, 0] = np.nan

    files = {
        "ok": mag("ok.pkl"),
        "nonfinite": mag("nonfinite.pkl", nonfinite),
        "no_words": mag("no_words.pkl", no_words),
        "label_range": mag("label_range.pkl", second_train_segment("label", 4.5)),
        "label_text": mag("label_text.pkl", second_train_segment("label", "very good")),
        "empty_valid": mag("empty_valid.pkl", lambda c: c.update(valid=[])),
        "acoustic60": mag("mosi_60.pkl", d_a=60),
    }
    raw = files["ok"].read_bytes()
    files["truncated"] = root / "truncated.pkl"
    files["truncated"].write_bytes(raw[: len(raw) // 2])

    marker = root / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    files["malicious"] = root / "malicious.pkl"
    files["malicious"].write_bytes(pickle.dumps({"train": [Exploit()], "dev": [], "test": []}))

    import h5py

    for key, name, drop in (("csd_no_features", "CMU_MOSI_COVAREP.csd", "features"),
                            ("csd_no_intervals", "CMU_MOSI_VisualFacet_4.1.csd", "intervals")):
        folder = write_csd(root / key, make_content(per_split=2))
        with h5py.File(folder / name, "a") as fh:
            videos = fh[next(iter(fh.keys()))]["data"]
            del videos[next(iter(videos.keys()))][drop]
        files[key] = folder

    rows = content_rows(make_content(per_split=3))
    columns = [c for c in SEGMENT_COLUMNS if c != "label"]
    files["csv_no_label"] = root / "no_label_segments.csv"
    with open(files["csv_no_label"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r[k] for k in columns} for r in rows)
    files["csv_label_text"] = write_segments_csv(root / "label_text_segments.csv",
                                                 [{**r, "label": "positive"} if i == 2 else r
                                                  for i, r in enumerate(rows)])
    files["csv_empty_valid"] = write_segments_csv(root / "empty_valid_segments.csv",
                                                  [r for r in rows if r["split"] != "valid"])
    files["csv_no_words"] = write_segments_csv(root / "no_words_segments.csv",
                                               [{**r, "words": "", "transcript": ""} if i == 0 else r
                                                for i, r in enumerate(rows)])
    files["marker"] = marker
    return files


# -- broken data files -------------------------------------------------------------------------------------
BAD_FILES = [
    ("no_words", r"segment 'vid0X-0_1'.*the word list is empty"),
    ("csv_no_words", r"both words and transcript are empty"),
    ("label_range", r"label 4.5 is outside \[-3, 3\]"),
    ("label_text", r"label 'very good' is not numeric"),
    ("csv_label_text", r"label 'positive' is not numeric"),
    ("truncated", r"truncated\.pkl.*(truncated|corrupt) pickle"),
    ("malicious", r"unsafe pickle: refusing to load posix\.system|unsafe pickle: refusing to load os\.system"),
    ("csd_no_features", r"CMU_MOSI_COVAREP\.csd.*needs 'features' and 'intervals'"),
    ("csd_no_intervals", r"CMU_MOSI_VisualFacet_4\.1\.csd.*needs 'features' and 'intervals'"),
    ("csv_no_label", r"missing column\(s\) label"),
    ("csv_empty_valid", r"no segments in split\(s\) valid"),
    ("empty_valid", r"empty_valid\.pkl.*split\(s\) valid hold no segments"),
]


@pytest.mark.parametrize("key,pattern", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_bad_data_file_is_one_clear_error_in_both_clis(bad_data, key, pattern, capsys, tmp_path):
    path = bad_data[key]
    before = snapshot(path) if path.is_dir() else {path.name: path.read_bytes()}
    line = cli_error(capsys, data_cli, ["inspect", str(path)])
    assert re.search(pattern, line), line
    out = tmp_path / "out"
    line = cli_error(capsys, bench.main, [*TEXT_RUN, "--dataset", str(path), "--out", str(out)])
    assert re.search(pattern, line), line
    assert not (out / "text").exists()  # refused before any run directory was made
    assert (snapshot(path) if path.is_dir() else {path.name: path.read_bytes()}) == before
    assert not bad_data["marker"].exists()  # the malicious __reduce__ never ran


def test_malicious_pickle_code_never_runs(bad_data):
    with pytest.raises(DataError, match="unsafe pickle"):
        load_splits(bad_data["malicious"], cache=False)
    assert not bad_data["marker"].exists()


def test_nonfinite_features_are_sanitized_and_counted(bad_data, capsys):
    assert data_cli(["inspect", str(bad_data["nonfinite"]), "--no-cache"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sanitized_nonfinite"] == 4
    assert summary["sanitized_nonfinite_by_split"] == {"test": 1, "train": 3}
    data = load_splits(bad_data["nonfinite"], cache=False)
    for ds in data.splits.values():
        assert np.isfinite(ds.acoustic).all() and np.isfinite(ds.visual).all()


def test_named_dataset_with_other_feature_sizes_is_refused(bad_data, tmp_path, capsys):
    """``mosi`` is defined with 74-d COVAREP; a 60-d file under that name fails before training."""
    (tmp_path / "mosi").mkdir()
    shutil.copy(bad_data["acoustic60"], tmp_path / "mosi" / "mosi.pkl")
    line = cli_error(capsys, bench.main, [*TEXT_RUN, "--dataset", "mosi", "--data-root", str(tmp_path),
                                          "--out", str(tmp_path / "out")])
    assert "acoustic features are 60-d, expected 74-d" in line and "mosi.pkl" in line


# -- names, flags and paths --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,fragments", [
    (["--models", "text,nope", *RUN], ["unknown model 'nope'", "registered models:", "mhmf"]),
    (["--models", "restitution", *RUN], ["unknown model 'restitution'"]),
    (["--models", "text", *RUN, "--dataset", "mosi-simm"], ["unknown dataset 'mosi-simm'", "mosi-sim"]),
    (["--models", "text", *RUN, "--dataset", "/no/such/file.pkl"], ["data file '/no/such/file.pkl' does not exist"]),
    (["--models", "text", *RUN, "--seeds", "0"], ["--seeds must be at least 1", "got 0"]),
    (["--models", "text", *RUN, "--max-train-samples", "0"], ["--max-train-samples must be at least 1"]),
    (["--models", "text", *RUN, "--epochs", "-1"], ["--epochs must be at least 1"]),
    (["--models", "text", *RUN, "--lr", "nan"], ["--lr must be a positive number"]),
    (["--models", "text", *RUN, "--device", "tpu:0"], ["--device tpu:0"]),
    (["--models", "text", *RUN, "--threads", "0"], ["--threads must be at least 1"]),
    (["--models", "text", "--study", "layers"], ["--study layers runs mhmf only"]),
    (["--models", "text", *RUN, "--layers", "speech=1,2"], ["--layers item 'speech=1,2'"]),
], ids=["model", "component-as-model", "dataset", "dataset-path", "seeds0", "max-train-0", "epochs", "lr",
        "device", "threads", "study", "layers-syntax"])
def test_bad_command_line_is_one_clear_error(argv, fragments, capsys, tmp_path):
    line = cli_error(capsys, bench.main, [*argv, "--out", str(tmp_path / "out")])
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "out" / "text").exists()


def test_layer_beyond_encoder_depth_names_layer_depth_and_fix(capsys, tmp_path):
    # the bundled MiniLM has 6 layers; checked before the dataset is loaded or anything is written
    line = cli_error(capsys, bench.main, ["--models", "mhmf", "--dataset", "synthetic", "--layers", "audio=11,12",
                                          "--out", str(tmp_path / "out")])
    assert "layer 11" in line and "depth of 6 layers" in line and "1..6" in line and "--layers audio=4,6" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="audio_layers contains layer 11, but the text encoder has 4 layers"):
        fusionkit.create("mhmf", bert_config=tiny_bert_config(), audio_layers=(11, 12))


def test_missing_text_model_path(capsys, tmp_path):
    missing = tmp_path / "no_model_here"
    line = cli_error(capsys, bench.main, ["--models", "text", *RUN[:-2], "--text-model", str(missing),
                                          "--out", str(tmp_path / "out")])
    assert str(missing) in line and "fusionkit attempts no download" in line
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty_model").mkdir()
    line = cli_error(capsys, bench.main, ["--models", "text", *RUN[:-2], "--text-model", str(tmp_path / "empty_model"),
                                          "--out", str(tmp_path / "out")])
    assert "has no config.json" in line


def test_unwritable_out_keeps_existing_files(capsys, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("precious")
    # as root chmod blocks nothing: a path whose parent is a regular file is unwritable for everyone
    line = cli_error(capsys, bench.main, [*TEXT_RUN, "--out", str(existing / "out")])
    assert "cannot write to --out" in line and "Not a directory" in line
    line = cli_error(capsys, bench.main, [*TEXT_RUN, "--out", str(existing)])
    assert "cannot write to --out" in line
    assert existing.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_with_other_settings_leaves_the_run_untouched(reference, capsys, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "text/seed0/result.json").unlink()  # an interrupted run …
    before = snapshot(out)
    line = cli_error(capsys, bench.main, [*TEXT_RUN, "--epochs", "3", "--out", str(out), "--resume"])
    assert "holds a run with other settings" in line
    assert snapshot(out) == before  # … is neither trained on nor rewritten


def test_unknown_names_in_the_api():
    with pytest.raises(KeyError, match="unknown component 'restitutoin'.*did you mean 'restitution'"):
        fusionkit.create("restitutoin")
    with pytest.raises(ValueError, match="unknown model 'nope'; registered models: .*text"):
        fusionkit.training.build_model("nope", {})
    with pytest.raises(ValueError, match="'restitution' is a fusion, not a model"):
        fusionkit.training.build_model("restitution", {})
    with pytest.raises(ValueError, match="select_metric 'acc3' is unknown.*mae"):
        TrainConfig(select_metric="acc3").resolve()
    with pytest.raises(KeyError, match="unknown metric 'acc3'; known metrics: acc2_has0"):
        get_metric("acc3")
    with pytest.raises(DataError, match="unknown dataset 'mosj'"):
        load_splits("mosj")


def test_other_clis_report_usage_errors_on_one_line(capsys):
    from fusionkit.__main__ import main as list_cli

    assert "unknown kind 'gadget'" in cli_error(capsys, list_cli, ["list", "--kind", "gadget"])
    assert "invalid choice: 'inspekt'" in cli_error(capsys, data_cli, ["inspekt", "x"])
    assert "unknown dataset 'nope'" in cli_error(capsys, data_cli, ["inspect", "nope"])
    assert "required: --text" in cli_error(capsys, predict.main, ["somewhere"])


@pytest.mark.slow
def test_cli_processes_exit_2_without_traceback(tmp_path):
    """The same contract for real processes (stderr as a user sees it)."""
    for argv in (["benchmarks.run", "--seeds", "0"],
                 ["fusionkit.predict", str(tmp_path / "nowhere"), "--text", "fine"]):
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT,
                              env=subprocess_env(), timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 2, proc.stderr
        _one_error_line(proc.stderr)


# -- checkpoints and prediction ----------------------------------------------------------------------------
def test_predict_feature_size_mismatch(checkpoint, capsys, tmp_path):
    np.save(tmp_path / "a60.npy", np.zeros((3, 60), np.float32))
    line = cli_error(capsys, predict.main, [str(checkpoint), "--text", "a b c",
                                            "--acoustic", str(tmp_path / "a60.npy")])
    assert "acoustic of sample 0 has shape (3, 60)" in line and "74 features" in line
    model = fusionkit.load(checkpoint)
    with pytest.raises(ValueError, match="60-d acoustic and 47-d visual.*trained with 74-d and 47-d"):
        model.evaluate(_dataset_with_dims(60, 47))
    with pytest.raises(ValueError, match="the batch has 60-d acoustic"):
        model(random_batch(d_acoustic=60))


def _dataset_with_dims(d_a: int, d_v: int):
    from fusionkit.data import build_dataset
    from fusionkit.data.errors import LoadReport
    from fusionkit.data.segments import RawSegment
    from fusionkit.data.tokenizers import get_tokenizer

    seg = RawSegment(id="s", words=["fine"], acoustic=np.zeros((1, d_a), np.float32),
                     visual=np.zeros((1, d_v), np.float32), label=0.5)
    return build_dataset([seg], tokenizer=get_tokenizer(None), max_seq_length=8, split="test", report=LoadReport())


def test_predict_no_words_and_nonfinite_input(checkpoint, capsys, tmp_path):
    assert "utterance 0 has no words" in cli_error(capsys, predict.main, [str(checkpoint), "--text", "   "])
    a = np.zeros((2, 74), np.float32)
    a[0, :2] = [np.nan, -np.inf]
    np.save(tmp_path / "a.npy", a)
    assert predict.main([str(checkpoint), "--text", "so boring", "--acoustic", str(tmp_path / "a.npy")]) == 0
    captured = capsys.readouterr()
    assert "warning: acoustic of sample 0: 2 NaN/inf values set to 0" in captured.err
    model = fusionkit.load(checkpoint)
    with pytest.warns(UserWarning):
        clean = model.predict("so boring", acoustic=np.zeros((2, 74), np.float32))
    assert float(captured.out.split("\t")[0]) == pytest.approx(clean, abs=1e-4)


def _corrupt(checkpoint: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / how
    shutil.copytree(checkpoint, bad)
    desc = json.loads((bad / "model.json").read_text())
    if how == "other_model":  # weights of another registered model under this model.json
        ckpt.save_model_weights(fusionkit.create("tfn", bert_config=tiny_bert_config()), bad / "model.safetensors")
    elif how == "other_config":
        desc["kwargs"]["bert_config"]["__transformers_config__"]["hidden_size"] = 64
    elif how == "unknown_model":
        desc["model"] = "text_v2"
    elif how == "missing_text_model":
        desc["kwargs"].pop("bert_config")
        desc["kwargs"]["text_model"] = str(tmp_path / "gone")
    elif how == "kwargs_not_object":
        desc["kwargs"] = [desc["kwargs"]]
    elif how == "truncated_weights":
        data = (bad / "model.safetensors").read_bytes()
        (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    if how == "not_json":
        (bad / "model.json").write_text("{ no json")
    else:
        (bad / "model.json").write_text(json.dumps(desc))
    return bad


@pytest.mark.parametrize("how,error,pattern", [
    ("other_model", CheckpointError,
     r"do not match the model 'text'.*(missing|unexpected) .*tensors.*different model or configuration"),
    ("other_config", CheckpointError, r"do not match the model 'text'.*shape mismatches"),
    ("unknown_model", CheckpointError, r"cannot rebuild the model.*unknown model 'text_v2'"),
    ("missing_text_model", TextModelNotFound, r"text model '.*gone' is neither a local directory"),
    ("kwargs_not_object", CheckpointError, r"model\.json is malformed"),
    ("truncated_weights", CheckpointError, r"model\.safetensors' is damaged: its size"),
    ("not_json", CheckpointError, r"model\.json is not valid JSON.*corrupt"),
])
def test_foreign_or_damaged_checkpoint(checkpoint, tmp_path, capsys, how, error, pattern):
    before = snapshot(checkpoint)
    bad = _corrupt(checkpoint, tmp_path, how)
    with pytest.raises(error, match=pattern):
        fusionkit.load(bad)
    line = cli_error(capsys, predict.main, [str(bad), "--text", "great fun"])
    assert re.search(pattern, line), line
    assert snapshot(checkpoint) == before


def test_predict_refuses_pickled_npy(checkpoint, bad_data, capsys, tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {bad_data['marker']}",))

    np.save(tmp_path / "a.npy", np.array([Exploit()], dtype=object), allow_pickle=True)
    line = cli_error(capsys, predict.main, [str(checkpoint), "--text", "fine", "--acoustic", str(tmp_path / "a.npy")])
    assert f"--acoustic '{tmp_path / 'a.npy'}'" in line and "allow_pickle=False" in line
    assert not bad_data["marker"].exists()


def test_predict_device_errors(checkpoint, capsys):
    assert "unknown device 'gpu0'" in cli_error(capsys, predict.main, [str(checkpoint), "--text", "x", "--device",
                                                                        "gpu0"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in cli_error(capsys, predict.main, [str(checkpoint), "--text", "x",
                                                                            "--device", "cuda"])


# -- interruption and atomic checkpoints -------------------------------------------------------------------
INTERRUPTER = textwrap.dedent('''
    """benchmarks.run that delivers a real signal to itself right after a mid-epoch checkpoint is on disk."""
    import os, signal, sys

    import benchmarks.run
    import fusionkit.training.config as config
    import fusionkit.training.engine as engine

    sig, epoch = getattr(signal, sys.argv[1]), int(sys.argv[2])
    config.GLOBAL_DEFAULTS["save_every"] = 1  # a checkpoint after every optimizer step
    save_last, fired = engine._save_last, []

    def save_then_signal(out_dir, ctx, identity, run, *rest):
        save_last(out_dir, ctx, identity, run, *rest)
        if not fired and run.epoch == epoch and run.batches_done > 0:
            fired.append(True)
            os.kill(os.getpid(), sig)

    engine._save_last = save_then_signal
    sys.exit(benchmarks.run.main(sys.argv[3:]))
''')


def _interrupted_run(tmp_path: Path, sig: str, epoch: int, argv: list[str] = TEXT_RUN
                     ) -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "interrupter.py"
    script.write_text(INTERRUPTER)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), sig, str(epoch), *argv, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=subprocess_env(),
                          timeout=SUBPROCESS_TIMEOUT)
    return proc, out


def _assert_resumes_to_reference(out: Path, reference: Path) -> None:
    assert bench.main([*TEXT_RUN, "--out", str(out), "--resume"]) == 0
    assert run_outputs(out) == run_outputs(reference)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(reference, tmp_path):
    proc, out = _interrupted_run(tmp_path, "SIGKILL", epoch=1)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = json.loads((out / "text/seed0/last/state.json").read_text())
    assert (state["run"]["epoch"], state["run"]["batches_done"], state["run"]["global_step"]) == (1, 1, 5)
    assert not (out / "text/seed0/result.json").exists() and not (out / "results.json").exists()
    assert not list(out.rglob("*.tmp"))
    holder = json.loads((out / ".benchmarks.lock").read_text())  # the killed process's lock stays behind
    assert holder["pid"] != os.getpid() and "benchmarks.run" in holder["command"]
    with pytest.warns(RuntimeWarning, match="taking over the stale lock"):
        _assert_resumes_to_reference(out, reference)
    assert not (out / ".benchmarks.lock").exists()


# models whose forward draws random numbers of its own (module generators, e.g. mhmf's restitution triplets)
OWN_RNG_MODELS = ("mhmf",)


@pytest.mark.slow
@pytest.mark.parametrize("model", OWN_RNG_MODELS)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_with_module_generators(model, tmp_path):
    from fusionkit.training.engine import module_generators

    built = fusionkit.create(model, bert_config=tiny_bert_config(), d_acoustic=5, d_visual=3)
    assert module_generators(built), f"{model} holds no generator of its own; drop it from OWN_RNG_MODELS"
    argv = ["--models", model, *RUN]
    reference_out = tmp_path / "reference"
    assert bench.main([*argv, "--out", str(reference_out)]) == 0
    proc, out = _interrupted_run(tmp_path, "SIGKILL", epoch=1, argv=argv)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = json.loads((out / model / "seed0/last/state.json").read_text())
    assert (state["run"]["epoch"], state["run"]["batches_done"]) == (1, 1)
    assert bench.main([*argv, "--out", str(out), "--resume"]) == 0
    assert run_outputs(out, model) == run_outputs(reference_out, model)


@pytest.mark.slow
def test_sigint_saves_exits_130_and_resumes_to_the_same_result(reference, tmp_path):
    proc, out = _interrupted_run(tmp_path, "SIGINT", epoch=0)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("interrupted:")]
    assert "epoch 1, step 2" in line and "--resume" in line
    # the signal arrived after step 1; the step in flight finished, was checkpointed, and the run stopped
    state = json.loads((out / "text/seed0/last/state.json").read_text())
    assert (state["run"]["epoch"], state["run"]["batches_done"], state["run"]["global_step"]) == (0, 2, 2)
    assert set(state["files"]) == {"model", "state"}
    assert all((out / "text/seed0/last" / name).is_file() for name in state["files"].values())
    assert not (out / "text/seed0/result.json").exists()
    _assert_resumes_to_reference(out, reference)


@pytest.mark.parametrize("failing", ["state.json", "optim-"])
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch, failing):
    """A crash inside a save (here ``os.replace`` failing on its 3rd file of that kind) leaves the previous
    checkpoint complete and loadable; resuming from it reproduces the uninterrupted run."""
    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.testing import tiny_bert_config

    data = load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0)
    config = dict(seed=0, epochs=2, batch_size=8, quiet=True, device="cpu", num_threads=1, save_every=1,
                  out_dir=tmp_path)
    last = tmp_path / "last"
    real_replace, calls, before = os.replace, [], {}

    def crashing_replace(src, dst):
        if Path(dst).name.startswith(failing) and not Path(dst).name.endswith(".sha256"):  # not the checksums
            calls.append(dst)
            if len(calls) == 3:
                before.update(snapshot(last))
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated"):
        train_and_evaluate("text", data, TrainConfig(**config), {"bert_config": tiny_bert_config()})
    monkeypatch.undo()
    state = json.loads((last / "state.json").read_text())
    assert (last / "state.json").read_bytes() == before["state.json"]
    assert state["run"]["global_step"] == 2  # the last complete save
    for name in state["files"].values():
        assert (last / name).read_bytes() == before[name]
    assert not list(tmp_path.rglob("*.tmp"))  # the temporary file of the failed write was removed
    resumed = train_and_evaluate("text", data, TrainConfig(**config, resume=True), {"bert_config": tiny_bert_config()})
    expected = json.loads((reference / "text/seed0/result.json").read_text())
    assert resumed.test == expected["test"] and resumed.best_epoch == expected["best_epoch"]


def test_atomic_write_fsyncs_before_replace_and_keeps_the_mode(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("{}")
    target.chmod(0o640)
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    ckpt.atomic_write_json(target, {"a": 1})
    monkeypatch.undo()
    assert events[:2] == ["fsync", "replace"]  # data on disk before the rename makes it visible
    assert json.loads(target.read_text()) == {"a": 1} and (target.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# -- determinism -------------------------------------------------------------------------------------------
def test_same_command_twice_gives_byte_identical_results(reference, tmp_path):
    assert bench.main([*TEXT_RUN, "--out", str(tmp_path / "again")]) == 0
    assert run_outputs(tmp_path / "again") == run_outputs(reference)


# -- safe loading ------------------------------------------------------------------------------------------
def _python_sources():
    for folder in ("fusionkit", "baselines", "recipes", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def test_no_unsafe_deserialization_in_the_codebase():
    """Only the restricted unpickler touches pickle; torch.load / np.load never unpickle."""
    offenders, pickle_users = [], set()
    for path in _python_sources():
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                    pickle_users.add(rel)
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            constant = {k: v.value for k, v in keywords.items() if isinstance(v, ast.Constant)}
            where = f"{rel}:{node.lineno} {name}"
            if name in ("torch.load",) and constant.get("weights_only") is not True:
                offenders.append(where + " without weights_only=True")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                if "allow_pickle" in keywords and constant.get("allow_pickle") is not False:
                    offenders.append(where + " with allow_pickle")
            if name.split(".")[-1] in ("read_pickle", "loads") and name.split(".")[0] in UNSAFE_MODULES | {"pd"}:
                offenders.append(where)
            if name in ("pickle.load", "pickle.Unpickler", "pickle.loads"):
                offenders.append(where)
    assert not offenders
    assert pickle_users == {"fusionkit/data/pickles.py"}
    # …and there the one Unpickler is the restricted one, which overrides find_class
    tree = ast.parse((ROOT / "fusionkit/data/pickles.py").read_text())
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    unpicklers = [c for c in classes.values() if any(_dotted(b) == "pickle.Unpickler" for b in c.bases)]
    assert [c.name for c in unpicklers] == ["RestrictedUnpickler"]
    assert any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in unpicklers[0].body)
    calls = {_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not calls & {"pickle.load", "pickle.loads", "pickle.Unpickler"}


def test_checkpoints_are_safetensors_and_json_only(reference):
    seed_dir = reference / "text" / "seed0"
    files = [p for d in ("best", "last") for p in (seed_dir / d).iterdir()]
    assert files and {p.suffix for p in files} == {".safetensors", ".json", ".sha256"}  # .sha256: JSON checksums
    for p in files:
        if p.suffix in (".json", ".sha256"):
            json.loads(p.read_text())
        else:  # safetensors: 8-byte little-endian header length, then a JSON header
            raw = p.read_bytes()
            header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
            assert header and all("dtype" in v for k, v in header.items() if k != "__metadata__")


def test_disabling_all_plugins_loads_no_entry_point(tmp_path, monkeypatch):
    """An installed distribution with a ``fusionkit`` entry point: with ``*`` its module is never imported."""
    site = tmp_path / "site"
    (site / "evil_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "evil_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\n"
                                                                 "Version: 0.1\n")
    (site / "evil_plugin-0.1.dist-info" / "entry_points.txt").write_text("[fusionkit]\nevil = evil_plugin\n")
    marker = tmp_path / "imported"
    (site / "evil_plugin.py").write_text(textwrap.dedent(f"""
        import pathlib, torch, fusionkit
        pathlib.Path({str(marker)!r}).write_text("imported")

        @fusionkit.hookimpl
        def fusionkit_register_components(registry):
            registry.add("evil_head", torch.nn.Identity, kind="head")
    """))
    monkeypatch.syspath_prepend(str(site))
    import importlib.metadata

    looked_up = []
    real_entry_points = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: (looked_up.append(kw), real_entry_points(**kw))[1])
    try:
        monkeypatch.setenv("FUSIONKIT_DISABLE_PLUGINS", "*")
        fusionkit.reset_registry()
        assert "evil_head" not in fusionkit.list_components() and "text" in fusionkit.list_components()
        assert not marker.exists() and "evil_plugin" not in sys.modules
        assert not [kw for kw in looked_up if kw.get("group") == "fusionkit"]
        monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS")  # control: the same plug-in does load when allowed
        fusionkit.reset_registry()
        assert fusionkit.get_registry().get("evil_head").plugin == "evil" and marker.exists()
    finally:
        sys.modules.pop("evil_plugin", None)
        fusionkit.reset_registry()


# -- distributed -------------------------------------------------------------------------------------------
AUDIT = textwrap.dedent('''
    """Records, per torchrun rank, every file write, rename, removal or mkdir under FK_AUDIT_ROOT."""
    import os, sys

    _rank, _root = os.environ.get("RANK"), os.environ.get("FK_AUDIT_ROOT")
    if _rank is not None and _root:
        _log = os.path.join(os.environ["FK_AUDIT_LOG"], "rank%s.log" % _rank)
        _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        _busy = []

        def _hook(event, args):
            if _busy:
                return
            if event == "open":
                if not isinstance(args[2], int) or not args[2] & _writing:
                    return
            elif event not in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"):
                return
            path = args[1] if event == "os.rename" else args[0]
            if not isinstance(path, (str, bytes, os.PathLike)):
                return
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(_root):
                _busy.append(1)
                try:
                    with open(_log, "a") as fh:
                        fh.write("%s %s\\n" % (event, path))
                finally:
                    _busy.pop()

        sys.addaudithook(_hook)
''')
# DDP differs from one process in its dropout masks (seeded per rank) and in how the bucketed batches are
# grouped, so it agrees within a tolerance: about 5x the differences seen with these settings.
DDP_TOLERANCE = {"valid_loss": 0.02, "mae": 0.02, "prediction": 0.05}


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_match_one_process_and_only_rank0_writes(reference, tmp_path):
    out, audit_logs, audit_site = tmp_path / "ddp", tmp_path / "audit", tmp_path / "audit_site"
    audit_logs.mkdir()
    audit_site.mkdir()
    (audit_site / "sitecustomize.py").write_text(AUDIT)
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    env = subprocess_env(PYTHONPATH=os.pathsep.join(filter(None, [str(audit_site), os.environ.get("PYTHONPATH")])),
                         FK_AUDIT_ROOT=str(out), FK_AUDIT_LOG=str(audit_logs))
    proc = subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", "-m", "benchmarks.run", *TEXT_RUN,
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("# Results on synthetic") == 1  # the table is printed by rank 0 only
    rank0 = (audit_logs / "rank0.log").read_text()
    assert f"{out / 'results.json'}" in rank0 and "best/model.safetensors" in rank0
    assert not (audit_logs / "rank1.log").exists()  # rank 1 wrote, renamed, removed and created nothing

    # a distributed sampler: each rank took half of every global batch of 8, so 4 steps per epoch, not 8
    def log(folder):
        return [json.loads(line) for line in (folder / "text/seed0/log.jsonl").read_text().splitlines()]

    single, ddp = log(reference), log(out)
    assert [(h["step"], h["samples_seen"]) for h in ddp] == [(h["step"], h["samples_seen"]) for h in single] \
        == [(4, 32), (8, 64)]
    for a, b in zip(single, ddp):
        assert abs(a["valid_loss"] - b["valid_loss"]) <= DDP_TOLERANCE["valid_loss"]
    results = [json.loads((d / "results.json").read_text())["runs"][0] for d in (reference, out)]
    assert abs(results[0]["test"]["mae"] - results[1]["test"]["mae"]) <= DDP_TOLERANCE["mae"]
    preds = [np.loadtxt(d / "text/seed0/test_predictions.csv", delimiter=",", skiprows=1, usecols=2)
             for d in (reference, out)]
    assert preds[0].shape == preds[1].shape == (32,)
    assert np.abs(preds[0] - preds[1]).max() <= DDP_TOLERANCE["prediction"]


def _interrupt_inside_a_weakref_callback(capsys) -> tuple[bool, str]:
    """Raise KeyboardInterrupt inside a weakref callback (where a Ctrl-C lands when it arrives during SQLAlchemy's
    clean-up) under ``run_cli``; whether the main flow then saw the interrupt, and what stderr said."""
    import time
    import weakref

    from fusionkit.cli import run_cli

    class Session:
        pass

    def cleanup(_ref):
        raise KeyboardInterrupt

    def main(_argv):
        session = Session()
        ref = weakref.ref(session, cleanup)  # noqa: F841 - the callback runs when `session` goes
        del session
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0

    try:
        code = run_cli(main, [])
    except KeyboardInterrupt:
        return True, capsys.readouterr().err
    assert code == 0
    return False, capsys.readouterr().err


def test_ctrl_c_in_a_finalizer_is_raised_again_not_printed_and_dropped(capsys):
    seen, err = _interrupt_inside_a_weakref_callback(capsys)
    assert seen, "the interrupt was lost: the command would have gone on running"
    assert "Exception ignored" not in err and "Traceback" not in err, err


def test_other_unraisable_errors_still_reach_the_previous_hook_which_is_restored():
    import weakref

    from fusionkit.cli import run_cli

    class Obj:
        pass

    def fail(_ref):
        raise OSError("disk gone")

    def main(_argv):
        obj = Obj()
        ref = weakref.ref(obj, fail)  # noqa: F841 - the callback runs when `obj` goes
        del obj
        return 0

    reported = []

    def previous(unraisable):
        reported.append(unraisable.exc_type)

    saved, sys.unraisablehook = sys.unraisablehook, previous
    try:
        assert run_cli(main, []) == 0
        assert sys.unraisablehook is previous
    finally:
        sys.unraisablehook = saved
    assert reported == [OSError]
