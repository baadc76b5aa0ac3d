"""``fusionkit.plan``: options checked once, composition resolved once, one meta build; the plan trains and builds
exactly like the model name with the same options. Training limits live in one table (``LIMITS``)."""
from __future__ import annotations

import math

import pytest
import torch

import fusionkit
from fusionkit.build import ModelBuildError
from fusionkit.testing import tiny_bert_config
from fusionkit.training import TrainConfig, train_and_evaluate
from fusionkit.training.config import LIMITS, settable

D_A, D_V = 5, 7


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["mhmf", "mhmf_small", "tfn", "lmf", "mult", "misa", "mag", "mag_mmsa", "iccn",
                                  "text"])
def test_plan_builds_the_same_model_as_create_and_leaves_the_rng_alone(name):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p = fusionkit.plan(name, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V)
    assert torch.equal(torch.random.get_rng_state(), before)  # the meta build draws nothing
    torch.manual_seed(0)
    planned = p.build()
    torch.manual_seed(0)
    created = fusionkit.create(name, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V)
    a, b = _state(planned), _state(created)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert p.num_parameters == sum(t.numel() for t in created.parameters())
    assert set(p.composition) == set(fusionkit.slots.slots_of(name))
    assert p.train_defaults == {k: v for k, v in dict(getattr(created, "train_defaults", {}) or {}).items()
                                if k != "seed"}


def test_plan_merges_data_sizes_and_refuses_contradictions(data):
    p = fusionkit.plan("text", data, bert_config=tiny_bert_config())
    assert (p.kwargs["d_acoustic"], p.kwargs["d_visual"]) == (data.info.d_acoustic, data.info.d_visual)
    assert p.dataset == data.info.name
    with pytest.raises(ValueError, match="d_acoustic=3"):
        fusionkit.plan("text", data, d_acoustic=3)
    with pytest.raises(ModelBuildError, match="does not accept nope"):
        fusionkit.plan("text", data, nope=1)
    with pytest.raises(ModelBuildError, match="unknown model 'txet'"):
        fusionkit.plan("txet", data)
    with pytest.raises(fusionkit.slots.SlotError, match="text.head"):
        fusionkit.plan("text", data, bert_config=tiny_bert_config(), head="restitution")


@pytest.mark.slow
def test_training_a_plan_is_bit_identical_to_training_the_name(data):
    tiny = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1)
    by_name = train_and_evaluate("mhmf", data, cfg, tiny)
    by_plan = train_and_evaluate(fusionkit.plan("mhmf", data, **tiny), data, cfg)
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (by_name, by_plan)]
    assert strip[0] == strip[1]
    assert (by_name.test_predictions == by_plan.test_predictions).all()
    with pytest.raises(ValueError, match="not model_kwargs"):
        train_and_evaluate(fusionkit.plan("text", data, **tiny), data, cfg, tiny)


def test_settable_keys_derive_from_the_limits_and_validate_enforces_them():
    import benchmarks.run as bench

    assert bench.SETTABLE == settable()
    assert set(settable()) == {k for k, lim in LIMITS.items() if lim.settable}
    for key, (kind, low, inclusive) in settable().items():
        if kind is str:
            with pytest.raises(ValueError, match=key):
                TrainConfig(**{key: "zz"}).resolve()
            continue
        TrainConfig(**{key: low if inclusive else (low + 1 if kind is int else low + 1e-6)}).resolve()
        below = low - 1 if kind is int else (low if not inclusive else low - 1e-6)
        with pytest.raises(ValueError, match=key):
            TrainConfig(**{key: below}).resolve()
    assert math.isclose(settable()["lr"][1], 0.0) and settable()["epochs"] == (int, 1, True)


def test_every_metric_carries_its_table_label():
    from fusionkit.metrics import METRICS, get_metric, metric_label

    labels = [metric_label(m) for m in METRICS]
    assert labels[:2] == ["Acc2 has0", "Acc2 non0"] and metric_label("mae") == "MAE"
    assert len(set(labels)) == len(METRICS) and all(get_metric(m).label == metric_label(m) for m in METRICS)


def test_plan_refuses_a_bad_option_value_before_any_build(data, monkeypatch):
    import fusionkit.planning as planning

    def no_build(*args, **kwargs):
        raise AssertionError("built despite a bad option value")

    monkeypatch.setattr(planning, "_build_on_meta", no_build)
    with pytest.raises(ModelBuildError) as e:
        fusionkit.plan("mhmf", data, d_fusion="x")
    assert str(e.value) == ("plan('mhmf', d_fusion=\"x\"): option d_fusion of model 'mhmf' takes an integer or null, "
                            "got the string \"x\"")
    with pytest.raises(ModelBuildError, match=r"option dropout of model 'mhmf' is a dropout probability in \[0, 1\), "
                                              r"got 1.5"):
        fusionkit.plan("mhmf", data, dropout=1.5)
    with pytest.raises(ModelBuildError, match=r"plan\('mhmf', audio_layers=\[0, 2\]\): layer 0 is below 1"):
        fusionkit.plan("mhmf", data, audio_layers=(0, 2))  # a tuple is checked as the list it is


@pytest.mark.slow
def test_the_inference_loader_builds_a_plan(data, tmp_path):
    tiny = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}
    planned = fusionkit.plan("text", data, **tiny)
    cfg = TrainConfig(epochs=1, batch_size=8, quiet=True, num_threads=1, out_dir=str(tmp_path))
    train_and_evaluate(planned, data, cfg)
    by_json = fusionkit.load(tmp_path)
    by_plan = fusionkit.load(tmp_path, plan=planned)
    assert by_json.model.state_dict().keys() == by_plan.model.state_dict().keys()
    assert all(torch.equal(v, by_plan.model.state_dict()[k]) for k, v in by_json.model.state_dict().items())
    with pytest.warns(UserWarning, match="no acoustic or visual features"):
        assert by_json.predict("a fine film") == by_plan.predict("a fine film")
    with pytest.raises(fusionkit.training.CheckpointError, match="the plan is for model 'mhmf', the checkpoint "
                                                                 "holds 'text'"):
        fusionkit.load(tmp_path, plan=fusionkit.plan("mhmf", data, **tiny))
    with pytest.raises(fusionkit.training.CheckpointError, match="the plan's options differ from the checkpoint's "
                                                                 "in dropout"):
        fusionkit.load(tmp_path, plan=fusionkit.plan("text", data, **tiny, dropout=0.3))
