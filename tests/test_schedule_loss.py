"""Training options ``schedule`` (linear | constant | cosine) and ``loss`` (mse | l1), and ``mag_mmsa``."""
import json
import math

import numpy as np
import pytest
import torch

import benchmarks.run as bench
import fusionkit
from fusionkit.testing import tiny_bert_config
from fusionkit.training import TrainConfig, train_and_evaluate
from fusionkit.training.config import GLOBAL_DEFAULTS
from fusionkit.training.engine import _task_loss
from fusionkit.training.optim import build_scheduler

TINY = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}


def _rates(schedule: str, *, total: int = 10, warmup: float = 0.2, lr: float = 1.0) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = build_scheduler(opt, total_steps=total, warmup=warmup, schedule=schedule)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_schedules_by_hand():
    # 10 steps, 2 of warm-up: rate at step k (before its update)
    warm = [0.0, 0.5]
    assert _rates("linear") == pytest.approx(warm + [(10 - k) / 8 for k in range(2, 10)])
    assert _rates("constant") == pytest.approx(warm + [1.0] * 8)
    assert _rates("cosine") == pytest.approx(warm + [0.5 * (1 + math.cos(math.pi * (k - 2) / 8)) for k in range(2, 10)])
    assert _rates("constant", warmup=0.0) == pytest.approx([1.0] * 10)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        _rates("step")


def test_task_losses_by_hand():
    pred, label = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert _task_loss(pred, label, "mse").item() == pytest.approx((1 + 9 + 0) / 3)
    assert _task_loss(pred, label, "l1").item() == pytest.approx((1 + 3 + 0) / 3)


def test_config_defaults_and_validation():
    cfg = TrainConfig().resolve()
    assert (cfg.schedule, cfg.loss) == ("linear", "mse") == (GLOBAL_DEFAULTS["schedule"], GLOBAL_DEFAULTS["loss"])
    assert TrainConfig(schedule="cosine", loss="l1").resolve().to_dict()["loss"] == "l1"
    with pytest.raises(ValueError, match="schedule must be one of linear, constant, cosine, got 'step'"):
        TrainConfig(schedule="step").resolve()
    with pytest.raises(ValueError, match="loss must be one of mse, l1, got 'huber'"):
        TrainConfig(loss="huber").resolve()


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=16, seed=0, cache=False)


@pytest.mark.slow
def test_l1_constant_run_logs_l1_and_constant_rate(data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1,
                      schedule="constant", warmup=0.0, loss="l1", out_dir=tmp_path)
    result = train_and_evaluate("text", data, cfg, TINY)
    lrs = [h["lr"] for h in result.history]
    assert all(lr == lrs[0] for lr in lrs)  # a constant rate at every epoch's end
    written = json.loads((tmp_path / "result.json").read_text())["config"]
    assert (written["schedule"], written["loss"]) == ("constant", "l1")
    # validation loss is the L1 task loss, i.e. the validation MAE
    for h in result.history:
        assert h["valid_loss"] == pytest.approx(h["valid"]["mae"])


@pytest.mark.slow
def test_set_schedule_and_loss_are_accepted_and_recorded(tmp_path):
    out = tmp_path / "sets"
    smoke = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
             "--tiny-bert", "--quiet"]
    assert bench.main(["--models", "text", *smoke, "--out", str(out), "--set", "text.schedule=constant",
                       "--set", "text.loss=l1"]) == 0
    run = json.loads((out / "text" / "seed0" / "run.json").read_text())
    assert run["train"]["schedule"] == "constant" and run["train"]["loss"] == "l1"
    config = json.loads((out / "text" / "seed0" / "result.json").read_text())["config"]
    assert (config["schedule"], config["loss"]) == ("constant", "l1")


@pytest.mark.parametrize("item, message", [
    ("text.schedule=step", "schedule is one of linear, constant, cosine"),
    ("text.loss=huber", "loss is one of mse, l1"),
])
def test_bad_schedule_or_loss(capsys, item, message):
    assert bench.main(["--models", "text", "--dataset", "synthetic", "--tiny-bert", "--set", item]) == 2
    assert message in capsys.readouterr().err


def test_mag_mmsa_fixes_mmsa_recipe_and_keeps_mag():
    from baselines.mag_bert import MAGBert, MMSA_TRAIN_DEFAULTS
    from fusionkit.training.build import model_spec

    kw = dict(bert_config=tiny_bert_config(), d_acoustic=5, d_visual=7)
    torch.manual_seed(0)
    mmsa = fusionkit.create("mag_mmsa", **kw)
    torch.manual_seed(0)
    mag = fusionkit.create("mag", dropout=0.3, pooling="cls", **kw)
    # a timm-style variant: the same class and builder, only fixed arguments and its own training recipe
    assert type(mmsa) is MAGBert and type(mag) is MAGBert
    assert model_spec("mag_mmsa").factory.variant_of[1] == {"dropout": 0.3, "pooling": "cls"}
    assert mmsa.pooling == "cls" and mmsa.encoder.injection.dropout.p == 0.3
    assert mmsa.train_defaults == {**MAGBert.train_defaults, **MMSA_TRAIN_DEFAULTS}
    cfg = TrainConfig().resolve(mmsa.train_defaults)
    assert (cfg.batch_size, cfg.weight_decay, cfg.warmup, cfg.schedule, cfg.loss) == (32, 0.0, 0.0, "constant", "l1")
    assert cfg.lr == cfg.encoder_lr == 2e-5
    # same computation as mag with those options: identical weights and outputs under one seed
    sd_a, sd_b = mmsa.state_dict(), mag.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # mag itself keeps the authors' recipe, on the class and on the instances it builds
    assert mag.train_defaults is MAGBert.train_defaults
    base = TrainConfig().resolve(MAGBert.train_defaults)
    assert (base.schedule, base.loss, base.warmup, base.lr) == ("linear", "mse", 0.1, 1e-5)
    assert np.isclose(fusionkit.create("mag", **kw).encoder.injection.dropout.p, 0.5)
