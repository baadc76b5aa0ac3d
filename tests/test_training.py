"""The shared training engine: config resolution, optimizer groups, end-to-end run, resume, DDP."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fusionkit
from fusionkit.testing import tiny_bert_config
from fusionkit.training import CheckpointError, TrainConfig, TrainingInterrupted, train_and_evaluate
from fusionkit.training.config import GLOBAL_DEFAULTS
from fusionkit.training.optim import param_groups

TINY = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}
# 32 training examples, batches of 8: 4 optimizer steps per epoch
FAST = dict(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1, save_every=3)


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """One uninterrupted run, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("full")
    return out, train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=out), TINY)


def _strip_time(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_config_resolution_order():
    cfg = TrainConfig(lr=1e-3).resolve({"lr": 5e-5, "epochs": 3})
    assert cfg.lr == 1e-3  # explicit beats the model's train_defaults
    assert cfg.epochs == 3  # train_defaults beat the global defaults
    assert cfg.patience == GLOBAL_DEFAULTS["patience"]
    assert TrainConfig().resolve().select_metric == "mae"
    with pytest.raises(ValueError, match="select_metric 'acc3'.*acc2_has0"):
        TrainConfig(select_metric="acc3").resolve()
    with pytest.raises(ValueError, match="unknown keys.*'foo'"):
        TrainConfig().resolve({"foo": 1})
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=1.5).resolve()
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        TrainConfig(resume=True).resolve()


def test_param_groups_split_encoder_and_decay():
    model = fusionkit.create("text", **TINY)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, encoder_lr=2e-5, weight_decay=0.1)}
    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert groups["encoder"]["lr"] == groups["encoder_no_decay"]["lr"] == 2e-5
    assert groups["head"]["lr"] == 1e-3
    assert groups["encoder_no_decay"]["weight_decay"] == groups["head_no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups["encoder_no_decay"]["params"]]
    assert any("LayerNorm" in n for n in no_decay) and all(p.ndim == 1 for p in groups["encoder_no_decay"]["params"])
    assert [names[id(p)] for p in groups["head_no_decay"]["params"]] == ["head.net.1.bias"]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == sum(1 for p in model.parameters() if p.requires_grad)
    frozen = fusionkit.create("text", encoder_mode="frozen", **TINY)
    assert {g["name"] for g in param_groups(frozen, lr=1e-3, encoder_lr=1e-5, weight_decay=0.1)} == {
        "head", "head_no_decay"}


def test_end_to_end_run_writes_checkpoints(data, full_run):
    tmp_path, res = full_run
    assert res.best_epoch in (1, 2) and len(res.history) == 2
    assert res.history[-1]["step"] == 8 and res.history[-1]["samples_seen"] == 64
    assert res.test_predictions.shape == (32,) and res.test_features.shape == (32, 16)
    assert res.valid == res.history[res.best_epoch - 1]["valid"]  # selection used the validation split
    assert np.all(np.isfinite(res.test_predictions))
    for name in ("log.jsonl", "result.json", "test_predictions.csv", "curve.png", "best/model.safetensors",
                 "best/model.json", "last/state.json"):
        assert (tmp_path / name).is_file(), name
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [1, 2] and set(log[0]["lr"]) == {"encoder", "encoder_no_decay", "head",
                                                                         "head_no_decay"}
    assert json.loads((tmp_path / "best/model.json").read_text())["model"] == "text"
    assert not list((tmp_path / "last").glob("model-*"))  # finished runs keep only the selected weights
    # the best checkpoint reproduces the reported test predictions
    model = fusionkit.load(tmp_path / "best")
    again = model.evaluate(data.splits["test"])
    np.testing.assert_allclose(again.predictions, res.test_predictions, rtol=1e-5, atol=1e-6)


# (how, step at which the run stops, step of the checkpoint it resumes from); 4 steps per epoch, save_every=3
@pytest.mark.parametrize("how,stop_step,saved_step", [
    ("sigint", 5, 5),  # SIGINT saves mid-epoch 2 and stops
    ("killed", 7, 6),  # dies without saving: resumes from the periodic mid-epoch checkpoint of step 6
    ("killed", 5, 4),  # resumes from the end-of-epoch-1 checkpoint
])
def test_resume_matches_uninterrupted(data, full_run, tmp_path, how, stop_step, saved_step):
    full = full_run[1]

    class Killed(Exception):
        pass

    def interrupt(info):
        if info["step"] == stop_step:
            if how == "sigint":
                signal.raise_signal(signal.SIGINT)
            else:
                raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted if how == "sigint" else Killed):
        train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=out), TINY, on_step=interrupt)
    state = json.loads((out / "last/state.json").read_text())
    assert state["run"]["global_step"] == saved_step
    resumed = train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=out, resume=True), TINY)
    assert resumed.test == full.test and resumed.valid == full.valid and resumed.best_epoch == full.best_epoch
    assert _strip_time(resumed.history) == _strip_time(full.history)
    np.testing.assert_array_equal(resumed.test_predictions, full.test_predictions)


def test_resume_refuses_other_settings(data, tmp_path):
    def stop(info):
        if info["step"] == 2:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=tmp_path), TINY, on_step=stop)
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.003 vs now 0.01"):
        train_and_evaluate("text", data, TrainConfig(**{**FAST, "lr": 1e-2}, out_dir=tmp_path, resume=True), TINY)


def test_unknown_model_lists_registered(data):
    with pytest.raises(ValueError, match="unknown model 'nope'; registered models: .*text"):
        train_and_evaluate("nope", data, TrainConfig(**FAST), TINY)
    with pytest.raises(ValueError, match="does not accept flavour"):
        train_and_evaluate("text", data, TrainConfig(**FAST), {**TINY, "flavour": 1})


DDP_WORKER = textwrap.dedent("""
    import json, sys
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.testing import tiny_bert_config
    from fusionkit.training import TrainConfig, train_and_evaluate
    data = load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, out_dir=sys.argv[2])
    res = train_and_evaluate("text", data, cfg, {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)})
    json.dump({"steps": [h["step"] for h in res.history], "seen": [h["samples_seen"] for h in res.history],
               "n_test": len(res.test_predictions), "test": res.test}, open(sys.argv[1], "w"))
""")


@pytest.mark.slow
def test_ddp_two_processes_agree_with_one(full_run, tmp_path):
    single = full_run[1]
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"rank{rank}.json"),
                                       str(tmp_path / "run")], env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # gathered evaluation: every rank reports the same complete result
    assert ranks[0]["steps"] == [h["step"] for h in single.history] == [4, 8]
    assert ranks[0]["seen"] == [h["samples_seen"] for h in single.history] == [32, 64]
    assert ranks[0]["n_test"] == 32
    assert (tmp_path / "run/best/model.safetensors").is_file()
    assert torch.distributed.is_available()


def test_fused_adamw_is_the_default_and_matches_the_loop():
    """The engine's optimizer uses torch's fused kernel on CPU; its updates equal the per-tensor loop's."""
    from fusionkit.training.optim import build_optimizer, fused_supported

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [build_optimizer(models[0], lr=1e-2, encoder_lr=1e-3, weight_decay=0.01),
            build_optimizer(models[1], lr=1e-2, encoder_lr=1e-3, weight_decay=0.01, fused=False)]
    assert opts[0].defaults["fused"] and not opts[1].defaults["fused"]
    x = torch.randn(8, 4)
    for _ in range(5):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, torch.zeros_like(a))
    assert not fused_supported([torch.zeros(2, dtype=torch.int64)]) and not fused_supported([])
