"""``--study probes``: the oracle ceiling, the share of attainable gain, the agreement check, and a block that
ignores its acoustic input scoring about 0 on ``probe-unique-a`` while the real block does not."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from benchmarks import probes as study
from fusionkit.data.probes import Hidden, ProbeSegment
from fusionkit.data.segments import RawSegment


def _table(flips, originals):
    return {f"s_{i}": ProbeSegment(segment=RawSegment(id=f"s_{i}", words=["w"], acoustic=np.zeros((1, 1)),
                                                      visual=np.zeros((1, 1)), label=-y if f else y),
                                   hidden=Hidden(flip=f), original_label=y)
            for i, (f, y) in enumerate(zip(flips, originals))}


def test_oracle_ceiling_is_the_true_rule_applied_to_text_predictions():
    table = _table([True, False, True], [1.0, 2.0, 0.5])
    ids = ["s_0", "s_1", "s_2"]
    preds = np.array([0.8, 1.5, -0.2])
    np.testing.assert_allclose(study.oracle_predictions(ids, preds, table), [-0.8, 1.5, 0.2])
    ceiling = study.ceiling_metrics(ids, preds, table)
    # targets -1, 2, -0.5: errors 0.2, 0.5, 0.7; signs (-, +, +) vs (-, +, -)
    assert ceiling["mae"] == pytest.approx(1.4 / 3)
    assert ceiling["acc2_non0"] == pytest.approx(2 / 3)
    # the oracle's error is the text model's error on the original labels, whatever the flips
    assert ceiling["mae"] == pytest.approx(np.mean(np.abs(preds - np.array([1.0, 2.0, 0.5]))))


def _records(model_mae, model_acc):
    """Two seeds, probes unique-a (gap: floor 1.0 → ceiling 0.6 MAE; 0.5 → 0.8 Acc2) and null (no gap)."""
    records = {"probe-unique-a": {}, "probe-null": {}}
    for s in (0, 1):
        records["probe-unique-a"][s] = {"floor": {"mae": 1.0, "acc2_non0": 0.5},
                                        "ceiling": {"mae": 0.6, "acc2_non0": 0.8},
                                        "models": {"text": {"mae": 1.0, "acc2_non0": 0.5},
                                                   "m": {"mae": model_mae[s], "acc2_non0": model_acc[s]}}}
        records["probe-null"][s] = {"floor": {"mae": 0.7, "acc2_non0": 0.7}, "ceiling": {"mae": 0.7, "acc2_non0": 0.7},
                                    "models": {"text": {"mae": 0.7, "acc2_non0": 0.7},
                                               "m": {"mae": 0.74, "acc2_non0": 0.7}}}
    return records


def test_share_of_attainable_gain_by_hand():
    out = study.analyse(_records([0.8, 0.7], [0.65, 0.71]), ["probe-unique-a", "probe-null"], ["text", "m"], [0, 1])
    cell = out["matrix"]["m"]["probe-unique-a"]["mae"]
    assert cell["values"] == pytest.approx([0.5, 0.75])  # (0.8 - 1) / (0.6 - 1), (0.7 - 1) / (0.6 - 1)
    assert cell["share"] == pytest.approx(0.625)
    # 95 % t-interval of two values: t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1768 / 1.414
    assert cell["half_width"] == pytest.approx(12.7062 * np.std([0.5, 0.75], ddof=1) / np.sqrt(2), rel=1e-3)
    assert out["matrix"]["m"]["probe-unique-a"]["acc2_non0"]["values"] == pytest.approx([0.5, 0.7])
    assert out["matrix"]["text"]["probe-unique-a"]["mae"]["share"] == 0
    null = out["matrix"]["m"]["probe-null"]["mae"]  # relative to unique-a's gap: (0.74 - 0.7) / (0.6 - 1)
    assert null["relative_to"] == "probe-unique-a" and null["values"] == pytest.approx([-0.1, -0.1])
    assert not null["clearly_above_0"]


def test_no_share_without_an_attainable_gap():
    records = _records([0.8, 0.7], [0.65, 0.71])
    records["probe-unique-a"][1]["ceiling"] = {"mae": 0.995, "acc2_non0": 0.5}  # text learnt nothing in seed 1
    out = study.analyse(records, ["probe-unique-a", "probe-null"], ["text", "m"], [0, 1])
    assert out["unattainable"]["mae"] == ["probe-unique-a", "probe-null"]
    assert out["matrix"]["m"]["probe-unique-a"]["mae"]["share"] is None


def test_clearly_above_zero_needs_an_interval_and_a_tenth():
    assert study.clearly_above_zero(0.5, 0.3)
    assert not study.clearly_above_zero(0.5, 0.6)
    assert not study.clearly_above_zero(0.05, 0.01)
    assert not study.clearly_above_zero(0.9, None)  # one seed: no interval


def test_compare_lists_cells_that_disagree(tmp_path, capsys):
    full = {"probe_results": study.analyse(_records([0.8, 0.79], [0.65, 0.66]), ["probe-unique-a", "probe-null"],
                                           ["text", "m"], [0, 1])}
    fast = {"probe_results": study.analyse(_records([0.9, 1.1], [0.5, 0.5]), ["probe-unique-a", "probe-null"],
                                           ["text", "m"], [0, 1])}
    assert study.compare(full, full) == []
    assert [c.split(":")[0] for c in study.compare(full, fast)] == ["m × probe-unique-a (MAE)",
                                                                    "m × probe-unique-a (Acc2 (non0))"]
    (tmp_path / "a.json").write_text(json.dumps(full))
    (tmp_path / "b.json").write_text(json.dumps(fast))
    assert study.main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "6 of 8 cells agree" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--fast"], "--fast applies to --study probes only"),
    (["--study", "probes", "--probes", "probe-nope"], "unknown probe 'probe-nope'"),
    (["--study", "probes", "--dataset", "mosi"], "--dataset does not apply to --study probes"),
    (["--study", "probes", "--cue-strength", "0"], "--cue-strength must be a positive number"),
    (["--cue-strength", "2"], "--cue-strength applies to --study probes only"),
])
def test_refusals(refusal, argv, message):
    assert message in refusal([*argv, "--tiny-bert", "--models", "text", "--out", "/nonexistent/never"])


# -- a dead acoustic path is caught ---------------------------------------------------------------------------------
class DeafSubNet(torch.nn.Module):
    """Fits tfn.audio_subnet but ignores its input: a fusion path that is silently dead."""

    def __init__(self, *, d_in: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        from fusionkit.components.subnet import SubNet

        self.inner = SubNet(d_in=d_in, d_hidden=d_hidden, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.zeros_like(x))


def _sentiment_table(root, n=360):
    """Short positive sentences (labels 1.5 to 2.5 by one word): on probe-unique-a the sign of the target is the
    acoustic flag alone, which a small model learns in a few epochs."""
    rng = np.random.default_rng(0)
    words = {"good": 2.0, "great": 2.5, "fun": 1.5}
    rows = []
    for i in range(n):
        w = list(words)[i % len(words)]
        sentence = ["the", rng.choice(["movie", "film"]), "was", w]
        rows.append({"segment_id": f"v{i // 4}_{i}", "label": f"{words[w]:.1f}",
                     "split": "train" if i % 6 < 4 else ("valid" if i % 6 == 4 else "test"),
                     "words": " ".join(sentence)})
    (root / "mosi").mkdir(parents=True)
    with open(root / "mosi" / "mosi_segments.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["segment_id", "label", "split", "words"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_a_block_that_ignores_acoustic_scores_about_zero_on_unique_acoustic(tmp_path, monkeypatch, tok, refusal):
    import fusionkit
    from benchmarks import run as bench

    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("fusionkit.encoders.bert.load_tokenizer", lambda name=None: tok)
    _sentiment_table(tmp_path / "data")
    fusionkit.reset_registry()
    registry = fusionkit.get_registry()
    registry._current_plugin = "test_blocks"
    try:
        registry.add("deaf_subnet", DeafSubNet, kind="adapter")
    finally:
        registry._current_plugin = "fusionkit"
    shares, effects = {}, {}
    try:
        for name, sets in (("real", []), ("deaf", ["--set", "tfn.audio_subnet=deaf_subnet"])):
            out = tmp_path / name
            argv = ["--study", "probes", "--probes", "probe-unique-a", "--models", "tfn", "--seeds", "1",
                    "--epochs", "12", "--set", "text.lr=3e-3", "--set", "text.encoder_lr=3e-3",
                    "--set", "tfn.encoder_lr=3e-3", "--set", "tfn.lr=1e-2", "--set", "tfn.audio_dropout=0",
                    "--data-root", str(tmp_path / "data"), "--tiny-bert", "--quiet", "--threads", "1",
                    # a stronger cue than the calibrated one, so that TFN's time-averaged audio path reads it here
                    "--cue-strength", "4", "--out", str(out), *sets]
            assert bench.main(argv) == 0
            results = json.loads((out / "results.json").read_text())
            assert results["cue_strength"] == 4.0 and not results["cue_strength_calibrated"]
            assert "**cue strength 4, not the calibrated one**" in (out / "results.md").read_text()
            shares[name] = {m: c["share"] for m, c in results["probe_results"]["matrix"]["tfn"]["probe-unique-a"].items()}
            effects[name] = study.cue_effect(out / "probe-unique-a" / "tfn" / "seed0", data_root=tmp_path / "data")
            assert (out / "heatmap.png").stat().st_size > 0
        # the runs at strength 4 are not resumed as runs of the calibrated probes
        assert "holds a run with other settings" in refusal([*argv[:argv.index("--cue-strength")], "--out",
                                                             str(out), "--resume", *sets])
    finally:
        fusionkit.reset_registry()
    # the deaf block recovers nothing of the attainable gain (it may lose: its text path is not text's); the real one
    # recovers a good part of it
    assert shares["deaf"]["mae"] < 0.1 and shares["deaf"]["acc2_non0"] < 0.1, shares
    assert shares["real"]["mae"] > 0.4 and shares["real"]["acc2_non0"] > 0.3, shares
    # predicted without the cue: the deaf block's predictions do not move at all; the real one flips its
    # predictions on the ironic segments, and leaves the others alone
    deaf, real = effects["deaf"], effects["real"]
    assert deaf["n_flipped"] == real["n_flipped"] > 0 and deaf["cue_strength"] == 4.0
    assert deaf["mean_abs_change_cued"] == 0 and deaf["flip_slope"] == 0, deaf
    assert real["mean_abs_change_cued"] > 0.3 and real["flip_slope"] > 0.3, real
    assert real["mean_abs_change_uncued"] < 0.1 * real["mean_abs_change_cued"], real


@pytest.mark.slow
def test_fast_mode_freezes_the_encoder_and_trains_at_its_budget_unless_told(tmp_path, monkeypatch, tok):
    from benchmarks import probes as study
    from benchmarks import run as bench

    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("fusionkit.encoders.bert.load_tokenizer", lambda name=None: tok)
    _sentiment_table(tmp_path / "data", n=48)
    argv = ["--study", "probes", "--probes", "probe-unique-a", "--models", "text", "--seeds", "1", "--fast",
            "--lr", "5e-4", "--data-root", str(tmp_path / "data"), "--tiny-bert", "--quiet", "--threads", "1",
            "--out", str(tmp_path / "out")]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # --lr given wins; the epochs are the fast mode's
    assert results["fast"] and results["train"] == {"lr": 5e-4, "epochs": study.FAST_TRAIN["epochs"]}
    # the floor's head gets a hidden layer (a linear read-out of frozen vectors is a weak text model)
    assert results["variants"]["text"]["kwargs"] == {"encoder_mode": "frozen", "head": study.FAST_FLOOR_HEAD}
    assert '"d_hidden": 128' in (tmp_path / "out" / "results.md").read_text()
    built = json.loads((tmp_path / "out" / "probe-null" / "text" / "seed0" / "best" / "model.json").read_text())
    assert built["composition"]["head"] == {"args": {"d_hidden": 128}, "block": "regression_head",
                                            "plugin": "fusionkit"}
    # the user's own head for the floor wins
    assert bench.main([*argv[:-1], str(tmp_path / "out2"), "--set", "text.head=regression_head"]) == 0
    results = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert results["variants"]["text"]["kwargs"] == {"encoder_mode": "frozen", "head": "regression_head"}


@pytest.mark.slow
def test_two_workers_give_the_single_process_matrix(tmp_path, monkeypatch, capfd):
    """``--workers 2`` splits the study's runs over two processes: every run trained once, the same numbers."""
    from benchmarks import run as bench

    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    _sentiment_table(tmp_path / "data", n=48)
    common = ["--study", "probes", "--probes", "probe-unique-a", "--models", "text,tfn", "--seeds", "1",
              "--epochs", "1", "--data-root", str(tmp_path / "data"), "--tiny-bert", "--quiet"]
    assert bench.main([*common, "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    capfd.readouterr()
    assert bench.main([*common, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    err = capfd.readouterr().err
    assert len(re.findall(r"\[worker [01]\] probe-[a-z-]+: \w+ seed 0 done", err)) == 4, err
    assert "exit codes" not in err and err.count("[skip]") == 4  # the parent only read the workers' runs
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["records"] == two["records"]
    assert one["probe_results"]["matrix"] == two["probe_results"]["matrix"]
    runs = sorted(p.parent.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("result.json"))
    assert [str(r) for r in runs] == [f"{probe}/{m}/seed0" for probe in ("probe-null", "probe-unique-a")
                                      for m in ("text", "tfn")]
    assert not list((tmp_path / "two").rglob("*.claim*")), "a claim was left behind"


def test_fast_mode_caps_large_batches_except_staged_models_and_given_sizes():
    from types import SimpleNamespace

    def info(model, batch, stages=()):
        return SimpleNamespace(model=model, train_defaults={"batch_size": batch},
                               plan=SimpleNamespace(stages=stages))

    checked = [info("text", 32), info("mult", 128), info("misa", 64), info("iccn", 300, ("dcca", "downstream")),
               info("mag", 48)]
    per_model = {"mag": {"batch_size": 48}}  # --set mag.batch_size=48: the user's choice stands
    assert study.cap_fast_batch(checked, per_model, given=False) == ["mult", "misa"]
    assert per_model == {"mult": {"batch_size": study.FAST_BATCH_SIZE}, "misa": {"batch_size": study.FAST_BATCH_SIZE},
                         "mag": {"batch_size": 48}}
    untouched = {}
    assert study.cap_fast_batch(checked, untouched, given=True) == [] and untouched == {}  # --batch-size given


def test_cue_effect_refuses_a_directory_that_is_not_a_finished_probe_run(tmp_path, capsys):
    assert study.main(["cue-effect", str(tmp_path)]) == 2
    assert "not a finished probe run with its best/ weights" in capsys.readouterr().err


def test_slope_is_one_for_the_full_flip_and_zero_for_no_change():
    ideal = np.array([-2.0, 1.0, 3.0])
    assert study._slope(ideal, ideal) == pytest.approx(1.0)
    assert study._slope(np.zeros(3), ideal) == 0
    assert study._slope(0.25 * ideal, ideal) == pytest.approx(0.25)
    assert study._slope(np.zeros(0), np.zeros(0)) is None
