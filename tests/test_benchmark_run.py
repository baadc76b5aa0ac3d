"""``python -m benchmarks.run`` end to end (tiny random BERT) and its command-line errors; inference CLI."""
import json

import numpy as np
import pytest

import benchmarks.run as bench
import fusionkit
from fusionkit import predict

SMOKE = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
         "--tiny-bert", "--quiet"]


def _error(capsys, argv):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "a"
    assert bench.main(["--models", "text", *SMOKE, "--out", str(out)]) == 0
    return out


def test_results_files(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["dataset"] == "synthetic" and results["simulated"] is True and results["seeds"] == [0]
    (run,) = results["runs"]
    assert run["model"] == "text" and run["seed"] == 0 and run["best_epoch"] == 1
    assert set(run["test"]) == set(fusionkit.metrics.METRICS)
    assert results["summary"]["text"]["mae"] == {"mean": run["test"]["mae"], "std": 0.0}
    md = (smoke_run / "results.md").read_text()
    assert md.startswith("# Results on synthetic — simulated: text, acoustic, visual")
    assert "| text | " in md
    for name in ("curve.png", "log.jsonl", "best/model.json", "run.json"):
        assert (smoke_run / "text/seed0" / name).is_file(), name


def test_same_command_twice_gives_identical_json(smoke_run, tmp_path):
    assert bench.main(["--models", "text", *SMOKE, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b/results.json").read_bytes() == (smoke_run / "results.json").read_bytes()


def test_resume_skips_finished_runs(smoke_run, capsys):
    before = (smoke_run / "results.json").read_bytes()
    weights = (smoke_run / "text/seed0/best/model.safetensors").stat().st_mtime_ns
    assert bench.main(["--models", "text", *SMOKE, "--out", str(smoke_run), "--resume"]) == 0
    assert "[skip] text seed 0" in capsys.readouterr().err
    assert (smoke_run / "text/seed0/best/model.safetensors").stat().st_mtime_ns == weights
    assert (smoke_run / "results.json").read_bytes() == before


def test_predict_cli_and_load(smoke_run, capsys):
    ckpt = smoke_run / "text/seed0/best"
    assert predict.main([str(ckpt), "--text", "the movie was great"]) == 0
    captured = capsys.readouterr()
    assert "warning: no acoustic or visual features given" in captured.err
    out = captured.out.strip().split("\t")
    model = fusionkit.load(ckpt)
    with pytest.warns(UserWarning):
        score = model.predict("the movie was great")
    assert float(out[0]) == pytest.approx(score, abs=1e-4) and out[1] == "the movie was great"
    # word list + per-word features; batch of utterances returns one score each
    a, v = np.zeros((2, 74), np.float32), np.zeros((2, 47), np.float32)
    assert model.predict(["so", "boring"], acoustic=a, visual=v) == pytest.approx(
        model.predict(["so boring", "great"], acoustic=[a, np.zeros((1, 74))], visual=[v, np.zeros((1, 47))], batch=True)[0],
        abs=1e-5)
    with pytest.raises(ValueError, match="acoustic of sample 0 has shape \\(3, 74\\).*2 rows"):
        model.predict(["so", "boring"], acoustic=np.zeros((3, 74)), visual=v)
    assert predict.main([str(smoke_run / "nowhere"), "--text", "x"]) == 2
    assert "error: no checkpoint" in capsys.readouterr().err


def test_load_rejects_mismatched_weights(smoke_run, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(smoke_run / "text/seed0/best", ckpt)
    desc = json.loads((ckpt / "model.json").read_text())
    desc["kwargs"]["bert_config"]["__transformers_config__"]["num_hidden_layers"] = 2
    (ckpt / "model.json").write_text(json.dumps(desc))
    with pytest.raises(fusionkit.training.CheckpointError, match="do not match the model.*unexpected tensors"):
        fusionkit.load(ckpt)


def test_unknown_model(capsys):
    line = _error(capsys, ["--models", "text,nope", *SMOKE])
    assert "unknown model 'nope'" in line and "text" in line and "mhmf" in line


def test_planned_but_missing_model(capsys, monkeypatch):
    monkeypatch.setattr(bench, "PLANNED_MODELS", bench.PLANNED_MODELS + ("future",))
    assert "model 'future' is planned but not implemented" in _error(capsys, ["--models", "future", *SMOKE])


def test_seeds_zero(capsys):
    assert "--seeds must be at least 1" in _error(capsys, ["--models", "text", *SMOKE[:2], "--seeds", "0"])


def test_flag_meaningless_for_every_model(capsys):
    line = _error(capsys, ["--models", "text", "--no-restitution", *SMOKE])
    assert "--no-restitution has no effect on text" in line


def test_bad_layers_and_argparse_errors(capsys):
    assert "--layers item 'speech=1,2'" in _error(capsys, ["--models", "mhmf", "--layers", "speech=1,2", *SMOKE])
    assert "invalid int value" in _error(capsys, ["--seeds", "many"])


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert "cannot write to --out" in _error(capsys, ["--models", "text", *SMOKE, "--out", str(blocker / "sub")])


def test_layer_study_plan_scales_to_depth():
    args = bench.build_parser().parse_args(["--study", "layers"])
    variants = bench.plan_variants(args, lambda: 6)
    kwargs = [v.kwargs for v in variants]
    assert {"audio_layers": (4, 6), "vision_layers": (3, 5)} in kwargs  # the paper's (7, 11) / (6, 10) at depth 6
    assert all(v.model == "mhmf" for v in variants) and len({v.label for v in variants}) == len(variants)
    finetune = bench.plan_variants(bench.build_parser().parse_args(["--study", "finetune"]), lambda: 6)
    assert [v.kwargs["encoder_mode"] for v in finetune] == ["finetune", "frozen", "random"]
    with pytest.raises(bench.UsageError, match="conflicts with --study finetune"):
        bench.plan_variants(bench.build_parser().parse_args(["--study", "finetune", "--encoder-mode", "frozen"]),
                            lambda: 6)


def test_tsne_figure(tmp_path):
    rng = np.random.default_rng(0)
    dirs = {}
    for label in ("mhmf", "mhmf[no restitution]"):
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        np.save(d / "test_features.npy", rng.normal(size=(20, 8)).astype(np.float32))
        np.save(d / "test_labels.npy", rng.uniform(-3, 3, 20).astype(np.float32))
        dirs[label] = d
    bench.plot_tsne(dirs, tmp_path / "tsne.png", seed=0)
    assert (tmp_path / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablation_flags_reach_only_accepting_models():
    args = bench.build_parser().parse_args(["--models", "mhmf,text", "--layers", "audio=2,4", "vision=1,3",
                                            "--no-restitution", "--encoder-mode", "frozen"])
    mhmf, text = bench.plan_variants(args, lambda: 4)
    assert mhmf.kwargs == {"audio_layers": (2, 4), "vision_layers": (1, 3), "restitution": False,
                           "encoder_mode": "frozen"}
    assert text.kwargs == {"encoder_mode": "frozen"}


def test_per_model_settings_reach_only_their_model(tmp_path):
    out = tmp_path / "sets"
    assert bench.main(["--models", "text,tfn", *SMOKE, "--out", str(out), "--set", "tfn.lr=0.002",
                       "--set", "tfn.epochs=2", "--set", "text.dropout=0.25"]) == 0
    text, tfn = (json.loads((out / m / "seed0" / "run.json").read_text()) for m in ("text", "tfn"))
    assert text["kwargs"]["dropout"] == 0.25 and "dropout" not in tfn["kwargs"]
    model = fusionkit.load(out / "text" / "seed0" / "best")
    assert model.model.head.net[0].p == 0.25  # the checkpoint rebuilds the model with the option
    assert text["train"] == {"epochs": 1, "batch_size": 8}
    assert tfn["train"] == {"epochs": 2, "batch_size": 8, "lr": 0.002}
    epochs = {m: [json.loads(line)["epoch"] for line in (out / m / "seed0" / "log.jsonl").read_text().splitlines()
                  if '"epoch"' in line] for m in ("text", "tfn")}
    assert max(epochs["text"]) == 1 and max(epochs["tfn"]) == 2  # the settings reached the training loop
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["per_model"] == {"text": {"dropout": 0.25}, "tfn": {"lr": 0.002, "epochs": 2}}
    assert "`tfn` only: lr 0.002, epochs 2." in (out / "results.md").read_text()


@pytest.mark.parametrize("item, message", [
    ("mag.lr=1e-5", "model 'mag' is not among the models run (text)"),
    ("text.foo=1", "'foo' is neither a training setting"),
    ("text.d_acoustic=3", "d_acoustic comes from the dataset"),
    ("text.lr=0", "lr must be above 0.0"),
    ("text.epochs=2.5", "epochs takes an integer"),
    ("text.lr=nan", "lr must be above 0.0"),
    ("lr=1e-5", "is not MODEL.KEY=VALUE"),
])
def test_bad_per_model_settings(capsys, item, message):
    assert message in _error(capsys, ["--models", "text", *SMOKE, "--set", item])
