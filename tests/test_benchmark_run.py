"""``python -m benchmarks.run`` end to end (tiny random BERT) and its command-line errors; inference CLI."""
import json

import numpy as np
import pytest

import benchmarks.run as bench
import fusionkit
from fusionkit import predict

SMOKE = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
         "--tiny-bert", "--quiet"]


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
    # one seed: values alone, the header says so; one epoch: best epoch = last epoch, flagged with a remedy
    assert "| text ⚠ | " in md and "±" not in md and "1 seed (0)" in md
    assert "- `text`: best validation epoch 1 of 1 (seed 0): still improving" in md
    assert "pass `--set text.epochs=4`" in md  # the model's own train_defaults, beyond --epochs 1
    (flag, *_) = results["flags"]["text"]
    assert flag["kind"] == "still_improving" and flag["seeds"] == [0]
    assert run["epochs_run"] == 1 and run["test_label_std"] > 0 and run["test_prediction_std"] >= 0
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


def test_unknown_model(refusal):
    line = refusal(["--models", "text,nope", *SMOKE])
    assert "unknown model 'nope'" in line and "text" in line and "mhmf" in line


def test_planned_but_missing_model(refusal, monkeypatch):
    monkeypatch.setattr(bench, "PLANNED_MODELS", bench.PLANNED_MODELS + ("future",))
    assert "model 'future' is planned but not implemented" in refusal(["--models", "future", *SMOKE])


def test_seeds_zero(refusal):
    assert "--seeds must be at least 1" in refusal(["--models", "text", *SMOKE[:2], "--seeds", "0"])


def test_flag_meaningless_for_every_model(refusal):
    line = refusal(["--models", "text", "--no-restitution", *SMOKE])
    assert "--no-restitution has no effect on text" in line


def test_bad_layers_and_argparse_errors(refusal):
    assert "--layers item 'speech=1,2'" in refusal(["--models", "mhmf", "--layers", "speech=1,2", *SMOKE])
    assert "invalid int value" in refusal(["--seeds", "many"])


def test_unwritable_out(refusal, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert "cannot write to --out" in refusal(["--models", "text", *SMOKE, "--out", str(blocker / "sub")])


def test_layer_study_is_table3_scaled_to_depth():
    args = bench.build_parser().parse_args(["--study", "layers"])
    at12 = bench.plan_variants(args, lambda: 12)
    assert [(v.kwargs["audio_layers"], v.kwargs["vision_layers"]) for v in at12] == [
        ((12, 12), (12, 12)), ((3, 4), (2, 3)), ((5, 6), (6, 7)), ((4, 11), (3, 10)), ((7, 11), (6, 10))]
    variants, rows = bench.table3_variants(6, {})
    assert [r["experiment"] for r in rows] == [1, 2, 3, 4, 5] and [r["paper_acc2"] for r in rows] == [
        83.9, 84.0, 84.4, 85.1, 85.3]
    assert [(r["audio"], r["vision"]) for r in rows] == [
        ([6, 6], [6, 6]), ([2, 2], [1, 2]), ([3, 3], [3, 4]), ([2, 6], [2, 5]), ([4, 6], [3, 5])]
    assert "audio {3,4} collapses to layer 2" in rows[1]["notes"][0] and len(rows[1]["notes"]) == 1
    assert "audio {5,6} collapses to layer 3" in rows[2]["notes"][0]
    assert rows[0]["notes"] == [] and rows[4]["notes"] == []  # {12} is one layer by definition
    assert len(variants) == 5
    # at depth 2 rows coincide: each distinct choice is trained once and the others say so
    variants2, rows2 = bench.table3_variants(2, {})
    assert len(variants2) < 5 and len(rows2) == 5
    shared = [r for r in rows2 if any("same layers as experiment" in n for n in r["notes"])]
    assert shared and all(r["label"] in {v.label for v in variants2} for r in rows2)
    finetune = bench.plan_variants(bench.build_parser().parse_args(["--study", "finetune"]), lambda: 6)
    assert [v.kwargs["encoder_mode"] for v in finetune] == ["finetune", "frozen", "random"]
    with pytest.raises(bench.UsageError, match="conflicts with --study finetune"):
        bench.plan_variants(bench.build_parser().parse_args(["--study", "finetune", "--encoder-mode", "frozen"]),
                            lambda: 6)


def _results(dataset: str, labels: dict, study=None, acc2=0.8) -> dict:
    from fusionkit.metrics import METRICS

    test = {m: acc2 for m in METRICS}
    runs = [{"model": label, "seed": s, "best_epoch": 1, "valid": test, "test": test} for label in labels
            for s in (0, 1)]
    return {"dataset": dataset, "simulated": True, "text_model": "x", "seeds": [0, 1], "runs": runs,
            "config": {"study": study, "variants": {label: {"model": m, "kwargs": kw} for label, (m, kw) in
                                                   labels.items()}, "train": {}, "per_model": {}},
            "summary": bench.summarize(runs, list(labels))}


def test_results_md_prints_the_papers_table_under_mosi_tables():
    md = bench.render_markdown(_results("mosi-sim", {"mhmf": ("mhmf", {}), "mhmf[no restitution]": ("mhmf", {}),
                                                      "text": ("text", {}), "tfn": ("tfn", {})}))
    assert "Table 1 of the MHMF-BERT paper: CMU-MOSI" in md
    assert "| MHMF-BERT(B)* | `mhmf`, `mhmf[no restitution]` | 85.3 | 85.3 | 0.748 | 0.787 |" in md
    assert "| TFN(B)¹ | `tfn` | 80.8 | 80.7 | 0.901 | 0.698 |" in md
    assert "| MAG-BERT(B)* | – | 83.6 | 83.6 | 0.782 | 0.763 |" in md
    assert "does not state whether its Acc2/F1 exclude zero labels" in md and "5 runs" in md
    mosei = bench.render_markdown(_results("mosei-sim", {"mhmf": ("mhmf", {})}))
    assert "Table 2 of the MHMF-BERT paper: CMU-MOSEI" in mosei
    assert "| ICCN(B)¹ | – | 84.2 | 84.2 | 0.565 | 0.713 |" in mosei and "3 runs" in mosei
    assert "paper" not in bench.render_markdown(_results("synthetic", {"mhmf": ("mhmf", {})})).lower()


def test_finetune_study_prints_the_papers_numbers_beside_ours():
    labels = {f"mhmf[{m}]": ("mhmf", {"encoder_mode": m}) for m in ("finetune", "frozen", "random")}
    md = bench.render_markdown(_results("mosi-sim", labels, study="finetune", acc2=0.5))
    assert "| frozen (`mhmf[frozen]`) | 80.2 | 50.0 ± 0.0 | 50.0 ± 0.0 |" in md
    assert "| random (`mhmf[random]`) | 71.9 |" in md and "| finetune (`mhmf[finetune]`) | 85.3 |" in md


def test_tsne_figure_and_silhouettes(tmp_path):
    from benchmarks import studies

    rng = np.random.default_rng(0)
    dirs = {}
    labels = np.r_[rng.uniform(-3, -0.1, 20), rng.uniform(0, 3, 20)].astype(np.float32)
    for label, spread in (("mhmf", 0.1), ("mhmf[no restitution]", 10.0)):
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        centres = np.where(labels[:, None] >= 0, 1.0, -1.0) * np.ones((1, 8))
        np.save(d / studies.FUSED_FILE, (centres + spread * rng.normal(size=(40, 8))).astype(np.float32))
        np.save(d / studies.LABELS_FILE, labels)
        dirs[label] = d
    studies.plot_tsne(dirs, tmp_path / "tsne.png", seed=0)
    assert (tmp_path / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tight, loose = (studies.silhouettes(np.load(d / studies.FUSED_FILE), labels, 0) for d in dirs.values())
    assert tight["feature_space"] > 0.8 and tight["tsne"] > 0.5  # two well separated clusters
    assert abs(loose["feature_space"]) < 0.2
    assert studies.silhouettes(np.ones((5, 3)), np.ones(5), 0) == {"feature_space": None, "tsne": None}


@pytest.mark.slow
def test_restitution_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    argv = ["--study", "restitution", *SMOKE, "--seeds", "2", "--max-samples", "48", "--out", str(out)]
    assert bench.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    analysis = results["study_results"]["restitution"]
    assert set(analysis) == {"mhmf", "mhmf[no restitution]"} and set(analysis["mhmf"]) == {"0", "1"}
    with_r = analysis["mhmf"]["0"]
    for stage in ("audio/1", "audio/2", "vision/1", "vision/2"):
        for key in ("loss", "gate_dev", "margin_F", "margin_F+", "margin_F-"):
            assert f"restitution/{stage}/{key}" in with_r["train"]
        assert f"restitution/{stage}/margin_F+" in with_r["test"]
    without = analysis["mhmf[no restitution]"]["0"]
    assert not any(k.endswith(("/loss", "margin_F+")) for k in without["train"])
    assert "restitution/audio/1/margin_F" in without["test"]
    assert set(with_r["silhouette"]) == {"feature_space", "tsne"}
    log = [json.loads(line) for line in (out / "mhmf/seed0/log.jsonl").read_text().splitlines()]
    assert log[-1]["train_diagnostics"]["restitution/floor_at_gate_half"] == pytest.approx(4 * np.log(2))
    md = (out / "results.md").read_text()
    assert "## Restitution diagnostics" in md and "| `mhmf` |" in md and (out / "tsne.png").is_file()


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
def test_bad_per_model_settings(refusal, item, message):
    assert message in refusal(["--models", "text", *SMOKE, "--set", item])


def test_models_all_lists_the_paper_model_and_its_small_variant():
    models = bench.resolve_models("all")
    assert models.index("mhmf") < models.index("mhmf_small") and "text" in models
