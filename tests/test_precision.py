"""Mixed precision, time-based checkpoints, SIGTERM, and the length-bucketed inference path."""
import json
import signal

import numpy as np
import pytest
import torch

import fusionkit
from fusionkit.data.loader import length_buckets
from fusionkit.testing import tiny_bert_config
from fusionkit.training import CheckpointError, TrainConfig, TrainingInterrupted, train_and_evaluate
from fusionkit.training import engine
from fusionkit.training.precision import autocast, grad_scaler, resolve_precision

TINY = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}
# 32 training examples, batches of 8: 4 optimizer steps per epoch
FAST = dict(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1)
# bf16 keeps 8 mantissa bits (relative rounding 2^-8 ≈ 0.4 %); over 8 steps of a tiny model the per-step
# training losses stay within 5 % of fp32's (they start near 1 and move by tens of percent)
BF16_LOSS_RTOL = 0.05


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)


def _losses(data, precision, model="mhmf", **kw):
    steps = []
    kwargs = {**TINY, "d_fusion": 16, "heads": 2} if model == "mhmf" else TINY
    result = train_and_evaluate(model, data, TrainConfig(**FAST, precision=precision, **kw), kwargs,
                                on_step=lambda info: steps.append(info["loss"]))
    return np.array(steps), result


def test_precision_resolution_and_validation():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        resolve_precision("half", torch.device("cpu"))
    with pytest.raises(ValueError, match="TrainConfig.precision must be one of"):
        TrainConfig(precision="fp8").resolve()
    assert grad_scaler("bf16", torch.device("cpu")) is None and grad_scaler("fp16", torch.device("cpu")) is not None
    layer = torch.nn.Linear(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.slow
def test_bf16_training_tracks_fp32_and_keeps_fp32_state(data, tmp_path):
    fp32, _ = _losses(data, "fp32")
    bf16, result = _losses(data, "bf16", out_dir=tmp_path)
    assert np.isfinite(bf16).all() and len(bf16) == len(fp32) == 8
    assert not np.array_equal(bf16, fp32)  # autocast did lower the precision
    np.testing.assert_allclose(bf16, fp32, rtol=BF16_LOSS_RTOL)
    assert np.isfinite(result.test_predictions).all()
    from safetensors.torch import load_file

    for name, t in load_file(str(tmp_path / "best/model.safetensors")).items():
        assert t.dtype in (torch.float32, torch.int64), name  # master weights stay fp32
    state = json.loads((tmp_path / "last/state.json").read_text())
    assert state["identity"]["config"]["precision"] == "bf16"


def test_fp16_runs_with_a_grad_scaler_on_cpu(data):
    losses, result = _losses(data, "fp16", model="text")
    assert np.isfinite(losses).all() and np.isfinite(result.test_predictions).all()


@pytest.mark.slow
def test_bf16_resume_is_exact_and_other_precision_is_refused(data, tmp_path):
    full = train_and_evaluate("text", data, TrainConfig(**FAST, precision="bf16", out_dir=tmp_path / "full"), TINY)

    def stop(info):
        if info["step"] == 5:
            signal.raise_signal(signal.SIGINT)

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        train_and_evaluate("text", data, TrainConfig(**FAST, precision="bf16", out_dir=out), TINY, on_step=stop)
    with pytest.raises(CheckpointError, match="trained with precision 'bf16', this run asks for 'fp32'.*"
                                              "--precision bf16"):
        train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=out, resume=True), TINY)
    resumed = train_and_evaluate("text", data, TrainConfig(**FAST, precision="bf16", out_dir=out, resume=True),
                                 TINY)
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    np.testing.assert_array_equal(resumed.test_predictions, full.test_predictions)


def test_fp16_checkpoint_keeps_the_scaler_state(data, tmp_path):
    def stop(info):
        if info["step"] == 2:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train_and_evaluate("text", data, TrainConfig(**FAST, precision="fp16", out_dir=tmp_path), TINY,
                           on_step=stop)
    state = json.loads((tmp_path / "last/state.json").read_text())
    assert state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]


def test_mid_epoch_saves_are_time_based(data, tmp_path, monkeypatch):
    """A fake clock advancing 100 s per reading (one per step, one after each save): with save_interval=250
    mid-epoch saves happen at steps 3 and 7; epoch ends always save; no step-count saves by default."""
    readings = iter(range(0, 10 ** 6, 100))
    monkeypatch.setattr(engine, "_clock", lambda: float(next(readings)))
    saves = []
    save_last = engine._save_last

    def record(out_dir, ctx, identity, run, *rest):
        saves.append((run.global_step, run.batches_done))
        save_last(out_dir, ctx, identity, run, *rest)

    monkeypatch.setattr(engine, "_save_last", record)
    train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=tmp_path, save_interval=250), TINY)
    assert saves == [(3, 3), (4, 0), (7, 3), (8, 0), (8, 0)]  # the last one: the "finished" state
    saves.clear()
    train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=tmp_path / "none", save_interval=0), TINY)
    assert all(b == 0 for _, b in saves)  # save_interval=0: epoch ends only


def test_sigterm_saves_and_stops_like_sigint(data, tmp_path):
    def term(info):
        if info["step"] == 2:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="epoch 1, step 2"):
        train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=tmp_path), TINY, on_step=term)
    state = json.loads((tmp_path / "last/state.json").read_text())
    assert (state["run"]["global_step"], state["run"]["batches_done"]) == (2, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


def test_length_buckets_cover_every_index_once_sorted_within_buckets():
    lengths = np.array([5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 3])
    batches = length_buckets(lengths, batch_size=2, bucket_batches=2)  # buckets of 4 indices
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[:2] == [[3, 1], [0, 2]]  # bucket 0..3 sorted by length: 1, 3, 5, 9
    assert all(len(b) <= 2 for b in batches)
    with pytest.raises(ValueError, match="batch_size must be ≥ 1"):
        length_buckets(lengths, batch_size=0)


def test_bucketed_evaluation_returns_dataset_order(data):
    torch.manual_seed(0)
    model = fusionkit.create("text", **TINY).eval()
    ds = data.splits["test"]
    out = engine.evaluate(model, ds, batch_size=5)
    assert out.ids == list(ds.ids)
    from fusionkit.data import collate

    with torch.no_grad():  # each sample alone (no padding) gives the same prediction
        single = [float(model(collate([ds[i]], max_seq_length=ds.max_seq_length, pad_token_id=ds.pad_token_id))
                        .prediction) for i in range(len(ds))]
    np.testing.assert_allclose(out.predictions, single, rtol=1e-5, atol=1e-6)


def test_run_cli_records_precision_and_refuses_to_resume_under_another(tmp_path, capsys):
    import benchmarks.run as bench

    smoke = ["--models", "text", "--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8",
             "--max-samples", "16", "--tiny-bert", "--quiet", "--device", "cpu", "--out", str(tmp_path)]
    assert bench.main([*smoke, "--precision", "bf16"]) == 0
    assert json.loads((tmp_path / "text/seed0/run.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "text/seed0/result.json").read_text())["config"]["precision"] == "bf16"
    capsys.readouterr()
    assert bench.main([*smoke, "--resume"]) == 2  # auto is fp32 on CPU
    err = capsys.readouterr().err
    assert "error:" in err and "--precision bf16, this run asks for fp32" in err
    assert bench.main([*smoke, "--precision", "fp8"]) == 2
    assert bench.main([*smoke, "--save-interval", "-1"]) == 2
    assert "--save-interval must be ≥ 0" in capsys.readouterr().err


def test_predictor_batches_are_length_bucketed_and_in_input_order(monkeypatch):
    from fusionkit.data import loader as loader_module
    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.inference import Predictor

    torch.manual_seed(0)
    model = fusionkit.create("text", **TINY, d_acoustic=5, d_visual=4)
    predictor = Predictor(model, {"model": "text", "d_acoustic": 5, "d_visual": 4, "max_seq_length": 50,
                                  "aligned": True}, load_tokenizer(None), torch.device("cpu"))
    words = ["a long sentence with quite a few words in it", "short", "a medium one here", "ok then", "x " * 9]
    calls = []
    buckets = loader_module.length_buckets
    monkeypatch.setattr(loader_module, "length_buckets", lambda *a, **k: calls.append(k) or buckets(*a, **k))
    with pytest.warns(UserWarning, match="no acoustic or visual"):
        batched = predictor.predict(words, batch=True, batch_size=2)
        single = [predictor.predict(w) for w in words]
    assert calls and calls[0]["batch_size"] == 2
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_loss_sums_read_later_name_the_step_of_a_non_finite_loss():
    """The GPU path reads the pending loss values every few steps: sums are the same as read step by step, and
    a non-finite loss is reported with its own step number."""
    values = [0.5, 0.25, 0.125]
    one, later = {"loss": 0.0, "task": 0.0, "n": 0.0, "terms": {}}, {"loss": 0.0, "task": 0.0, "n": 0.0, "terms": {}}
    every, batched = engine._LossSums(), engine._LossSums()
    for step, v in enumerate(values, start=1):
        t = torch.tensor(v)
        every.add(step, t, t, {"r": t / 2}, 4, {"d": 1.5})
        every.flush(one, lambda *a: "")
        batched.add(step, t, t, {"r": t / 2}, 4, {"d": 1.5})
    batched.flush(later, lambda *a: "")
    assert one == later and later["loss"] == 4 * sum(values) and later["diagnostics"]["d"] == [18.0, 12.0]
    bad = engine._LossSums()
    bad.add(7, torch.tensor(1.0), torch.tensor(1.0), {}, 2)
    bad.add(8, torch.tensor(float("nan")), torch.tensor(1.0), {}, 2)
    with pytest.raises(FloatingPointError, match="step 8"):
        bad.flush({"loss": 0.0, "task": 0.0, "n": 0.0, "terms": {}}, lambda step, task, terms: f"step {step}")


def test_bucketed_evaluation_puts_fused_outputs_in_dataset_order(data):
    from fusionkit.data import collate

    torch.manual_seed(0)
    model = fusionkit.create("mhmf", **TINY, d_fusion=16, heads=2).eval()
    ds = data.splits["test"]
    out = engine.evaluate(model, ds, batch_size=5)
    assert out.fused is not None and out.fused.shape[0] == len(ds)
    with torch.no_grad():
        for i in (0, 3, len(ds) - 1):
            single = model(collate([ds[i]], max_seq_length=ds.max_seq_length, pad_token_id=ds.pad_token_id))
            np.testing.assert_allclose(out.fused[i], single.fused[0].numpy(), rtol=1e-4, atol=1e-5)
