"""Slots: every model's replaceable blocks, built through the registry by name and checked against contracts."""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch
from torch import nn

import fusionkit
from fusionkit.slots import SlotError, build_block, non_default, parse_value, resolve_composition, slots_of
from fusionkit.testing import random_batch, tiny_bert_config
from fusionkit.training import ModelBuildError
from fusionkit.training.build import model_spec

D_A, D_V = 5, 7


def _base_models() -> list[str]:
    """Registered models that declare slots, without timm-style variants (they share their base's slots)."""
    return [m for m in fusionkit.list_components("model")
            if slots_of(m) and not hasattr(model_spec(m).factory, "variant_of")]


def _cases():
    registry = fusionkit.get_registry()
    for model in _base_models():
        for slot in slots_of(model).values():
            for block in registry.names(slot.kind):
                yield pytest.param(model, slot.name, block, id=f"{model}.{slot.name}={block}")


def _build(model: str, **slots):
    return fusionkit.create(model, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **slots)


def _train_step(model: nn.Module) -> torch.Tensor:
    model.train()
    out = model(random_batch(batch_size=4, seq_len=8, d_acoustic=D_A, d_visual=D_V, seed=3))
    loss = out.prediction.pow(2).mean() + sum(out.loss_terms.values(), torch.zeros(()))
    loss.backward()
    return out.prediction


def _assert_trains(model: nn.Module) -> None:
    prediction = _train_step(model)
    assert prediction.shape == (4,) and torch.isfinite(prediction).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.fixture
def extra_blocks():
    """Blocks registered by a plug-in named ``test_blocks`` (fitting and misfitting ones)."""
    fusionkit.reset_registry()
    registry = fusionkit.get_registry()
    registry._current_plugin = "test_blocks"
    try:
        registry.add("sum_fusion", SumFusion, kind="fusion")
        registry.add("wide_fusion", WideFusion, kind="fusion")
        registry.add("mean_subnet", MeanSubNet, kind="adapter")
        registry.add("linear_rank_free_fusion", RankFreeFusion, kind="fusion")
        registry.add("every_modality_shared_private", EveryModalitySharedPrivate, kind="adapter")
        registry.add("plain_shared_private", PlainSharedPrivate, kind="adapter")
        registry.add("no_dropout_gate", NoDropoutGate, kind="fusion")
    finally:
        registry._current_plugin = "fusionkit"
    yield registry
    fusionkit.reset_registry()


class SumFusion(nn.Module):
    """Fits mhmf.fusion: built with dim=, forward(g_v, h_v, g_a, h_a) -> (..., dim)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, g_vision, h_vision, g_audio, h_audio):
        return self.proj(g_vision + h_vision + g_audio + h_audio)


class WideFusion(SumFusion):
    """Misfits mhmf.fusion: one channel too many."""

    def forward(self, g_vision, h_vision, g_audio, h_audio):
        out = super().forward(g_vision, h_vision, g_audio, h_audio)
        return torch.cat([out, out[..., :1]], dim=-1)


class MeanSubNet(nn.Module):
    """Fits tfn.audio_subnet: d_in -> d_hidden on one vector per sample."""

    def __init__(self, *, d_in: int, d_hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_hidden)

    def forward(self, x):
        return torch.tanh(self.linear(x))


class RankFreeFusion(nn.Module):
    """Fits lmf.fusion (dims=, d_out=) but takes no ``rank``."""

    def __init__(self, *, dims, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(sum(dims), d_out)

    def forward(self, *xs):
        return self.linear(torch.cat(xs, dim=-1))


# -- declarations ------------------------------------------------------------------------------------------
def test_every_model_declares_slots_with_the_factorys_defaults():
    for model in fusionkit.list_components("model"):
        slots = slots_of(model)
        assert "text_encoder" in slots, model
        params = inspect.signature(model_spec(model).factory).parameters
        for name, slot in slots.items():
            assert name in params, f"{model}: slot {name} is not a factory keyword"
            assert params[name].default == (True if slot.optional else slot.default), f"{model}.{name}"
            assert slot.default in fusionkit.get_registry(), f"{model}.{name}: default {slot.default} not registered"
            assert fusionkit.get_registry().get(slot.default).kind == slot.kind


def test_mhmf_slots_are_the_issues():
    assert list(slots_of("mhmf")) == ["text_encoder", "self_attention", "cross_attention", "memory", "restitution",
                                      "fusion", "head"]
    assert slots_of("mhmf_small") == slots_of("mhmf")


# -- every model x slot x block of the slot's kind ------------------------------------------------------------
KNOWN_MISFITS = {  # (model, slot, block): a phrase of the error
    ("lmf", "fusion", "tensor_fusion"): "does not take the keyword d_out",
    ("tfn", "audio_subnet", "self_attention_adapter"): "does not take the keyword d_hidden",
    ("mhmf", "fusion", "restitution"): "does not fit: calling it on tiny inputs raised TypeError",
    ("mhmf", "restitution", "gated_fusion"): "does not fit: calling it on tiny inputs raised TypeError",
    ("mult", "crossmodal", "cross_attention_adapter"): "does not take the keyword dim",
}


@pytest.mark.parametrize("model,slot,block", list(_cases()))
def test_model_slot_block_builds_and_trains_or_is_refused(model, slot, block):
    torch.manual_seed(0)
    try:
        built = _build(model, **{slot: block})
    except SlotError as e:
        message = str(e)
        plugin = fusionkit.get_registry().get(block).plugin
        assert message.startswith(f"{model}.{slot}: block {block!r} (plug-in {plugin!r})"), message
        assert "this slot takes a block of kind" in message and "\n" not in message
        phrase = KNOWN_MISFITS.get((model, slot, block))
        assert phrase is None or phrase in message, message
        return
    assert (model, slot, block) not in KNOWN_MISFITS
    _assert_trains(built)


def test_defaults_fit_every_slot():
    for model in _base_models():
        for slot in slots_of(model).values():
            torch.manual_seed(0)
            _assert_trains(_build(model, **{slot.name: {"name": slot.default}}))  # a dict value: dry run included


@pytest.mark.parametrize("model,slots", [
    ("tfn", {"fusion": {"name": "low_rank_fusion", "d_out": 8}}),  # TFN with low-rank fusion
    ("text", {"head": {"name": "regression_head", "d_hidden": 8}}),
    ("mhmf", {"head": {"name": "regression_head", "d_hidden": 8}, "restitution": {"name": "restitution",
                                                                                   "reduction": 2}}),
    ("mhmf", {"self_attention": {"name": "self_attention_adapter", "num_layers": 1}}),
])
def test_blocks_with_arguments(model, slots):
    torch.manual_seed(0)
    built = _build(model, **slots)
    _assert_trains(built)
    composition = resolve_composition(model, slots)
    for name, value in slots.items():
        assert composition[name] == {"block": value["name"], "plugin": "fusionkit",
                                     "args": {k: v for k, v in value.items() if k != "name"}}


def test_mults_crossmodal_transformer_as_mhmfs_cross_attention():
    from fusionkit.components.crossmodal import CrossmodalTransformer

    torch.manual_seed(0)
    model = _build("mhmf", cross_attention="crossmodal_cross_attention")
    stage = model.audio_stages[0].cross_attention
    assert isinstance(stage, CrossmodalTransformer) and len(stage.layers) == 3  # mhmf's ca_layers
    _assert_trains(model)


def test_argument_reaches_the_block():
    model = _build("tfn", fusion={"name": "low_rank_fusion", "d_out": 8, "rank": 3})
    assert model.fusion.rank == 3 and model.post_fusion_layer_1.in_features == 8
    sa = _build("mhmf", self_attention={"name": "self_attention_adapter", "num_layers": 1}).audio_adapter
    assert len(sa.layers) == 1


# -- plug-in blocks and misfits ------------------------------------------------------------------------------
def test_plugin_fusion_fills_mhmf_fusion(extra_blocks):
    torch.manual_seed(0)
    model = _build("mhmf", fusion="sum_fusion")
    assert isinstance(model.gated_fusion, SumFusion)
    _assert_trains(model)
    assert model.gated_fusion.proj.weight.grad.abs().sum() > 0
    # unaligned input: the fusion gets pooled (B, dim) streams
    unaligned = dataclasses.replace(
        random_batch(batch_size=3, seq_len=6, d_acoustic=D_A, d_visual=D_V), acoustic=torch.randn(3, 4, D_A),
        visual=torch.randn(3, 5, D_V), acoustic_mask=torch.ones(3, 4, dtype=torch.bool),
        visual_mask=torch.ones(3, 5, dtype=torch.bool))
    assert not unaligned.aligned
    assert torch.isfinite(model.eval()(unaligned).prediction).all()
    assert resolve_composition("mhmf", {"fusion": "sum_fusion"})["fusion"] == {
        "block": "sum_fusion", "plugin": "test_blocks", "args": {}}


def test_wrong_output_shape_is_one_clear_error(extra_blocks):
    with pytest.raises(SlotError) as info:
        _build("mhmf", fusion="wide_fusion")
    message = str(info.value)
    assert message.startswith("mhmf.fusion: block 'wide_fusion' (plug-in 'test_blocks') does not fit: its output "
                              "has shape (2, 3, 33), expected (2, 3, 32)")
    assert "forward(g_vision, h_vision, g_audio, h_audio)" in message and "built as block(dim=…)" in message
    assert isinstance(info.value, ModelBuildError) and isinstance(info.value, ValueError)


def test_wrong_kind_is_refused():
    with pytest.raises(SlotError, match=r"mhmf\.fusion: block 'gru_memory' \(plug-in 'fusionkit'\) is a 'memory', "
                                        r"but this slot takes a block of kind 'fusion'"):
        _build("mhmf", fusion="gru_memory")


def test_unknown_block_lists_close_matches():
    with pytest.raises(SlotError, match=r"mhmf\.fusion: unknown component 'gated_fusoin'; did you mean "
                                        r"'gated_fusion'.*blocks of kind 'fusion': gated_fusion"):
        _build("mhmf", fusion="gated_fusoin")


def test_plugin_subnet_in_tfn(extra_blocks):
    torch.manual_seed(0)
    model = _build("tfn", audio_subnet="mean_subnet", video_subnet="mean_subnet")
    assert isinstance(model.audio_subnet, MeanSubNet)
    _assert_trains(model)


def test_option_a_swapped_block_does_not_take(extra_blocks):
    _build("lmf", fusion="linear_rank_free_fusion")  # rank left at its default: nothing to pass
    with pytest.raises(SlotError, match=r"lmf\.fusion: block 'linear_rank_free_fusion' \(plug-in 'test_blocks'\) "
                                        r"does not take 'rank', which 'lmf''s rank=8 sets"):
        _build("lmf", fusion="linear_rank_free_fusion", rank=8)


@pytest.mark.parametrize("value,phrase", [
    (42, "a slot value is a registered block name or a dict"),
    ({"k": 1}, "a slot value is a registered block name or a dict"),
    ({"name": "gated_fusion", "dim": 8}, "dim is set by model 'mhmf' itself"),
    ({"name": "gated_fusion", "bogus": 1}, "does not take bogus"),
    (False, "a slot value is a registered block name"),  # only the optional restitution slot takes booleans
])
def test_bad_slot_values(value, phrase):
    with pytest.raises(SlotError, match=phrase):
        _build("mhmf", fusion=value)


def test_restitution_slot_true_false_and_block():
    slot = slots_of("mhmf")["restitution"]
    assert parse_value("mhmf", slot, True) == ("restitution", {})
    assert parse_value("mhmf", slot, False) == (None, {})
    model = _build("mhmf", restitution=False)
    assert model.restitution_loss is None and model.audio_stages[0].restitution is None
    assert resolve_composition("mhmf", {"restitution": False})["restitution"]["block"] is None
    assert non_default("mhmf", {"restitution": False, "fusion": "gated_fusion"}) == {}


# -- the dry run leaves no trace ----------------------------------------------------------------------------
def test_dry_run_keeps_rng_mode_and_statistics():
    slot_factory = model_spec("tfn").factory
    torch.manual_seed(0)
    block = build_block(slot_factory, "audio_subnet", {"name": "subnet", "dropout": 0.1}, d_in=6, d_hidden=4)
    after_dry_run = torch.rand(3)
    torch.manual_seed(0)
    plain = fusionkit.create("subnet", d_in=6, d_hidden=4, dropout=0.1)
    assert torch.equal(after_dry_run, torch.rand(3))  # the dry run drew nothing from the global RNG
    assert block.training
    assert int(block.norm.num_batches_tracked) == 0 and torch.equal(block.norm.running_mean, torch.zeros(6))
    for (name, a), (_, b) in zip(block.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_dry_run_on_the_meta_device_checks_shapes(extra_blocks):
    with torch.device("meta"):
        model = _build("mhmf", fusion="sum_fusion")
        assert next(model.gated_fusion.parameters()).is_meta
        with pytest.raises(SlotError, match=r"its output has shape \(2, 3, 33\), expected \(2, 3, 32\)"):
            _build("mhmf", fusion="wide_fusion")


# -- defaults are the models of before: same parameters, same outputs ------------------------------------------
def _reference_tfn_lmf(name: str):
    from fusionkit.components.low_rank_fusion import LowRankFusion
    from fusionkit.components.subnet import SubNet, TextSubNet
    from fusionkit.components.tensor_fusion import TensorFusion
    from fusionkit.encoders.bert import build_bert_encoder
    from baselines.lmf import LMF
    from baselines.tfn import TFN

    encoder = build_bert_encoder(config=tiny_bert_config())
    a, v = (4, 16) if name == "tfn" else (32, 32)
    parts = dict(encoder=encoder, text_subnet=TextSubNet(d_in=32, d_out=64, dropout=0.3, pooling="mean"),
                 audio_subnet=SubNet(d_in=D_A, d_hidden=a, dropout=0.3),
                 video_subnet=SubNet(d_in=D_V, d_hidden=v, dropout=0.3))
    if name == "tfn":
        return TFN(**parts, fusion=TensorFusion(dims=(a, v, 64)), post_fusion_dim=32, post_fusion_dropout=0.3)
    return LMF(**parts, fusion=LowRankFusion(dims=(a, v, 64), d_out=1, rank=4))


def _reference_text():
    from baselines.text_only import TextOnly
    from fusionkit.components.heads import RegressionHead
    from fusionkit.encoders.bert import build_bert_encoder

    encoder = build_bert_encoder(config=tiny_bert_config())
    return TextOnly(encoder=encoder, head=RegressionHead(d_in=encoder.hidden_size, dropout=0.1))


def _reference_misa():
    from baselines.misa import MISA
    from fusionkit.components.misa import MISAFusion, MISASequenceEncoder, MISASharedPrivate
    from fusionkit.encoders.bert import build_bert_encoder

    encoder = build_bert_encoder(config=tiny_bert_config())
    visual, acoustic = MISASequenceEncoder(d_in=D_V), MISASequenceEncoder(d_in=D_A)
    return MISA(encoder=encoder, visual_encoder=visual, acoustic_encoder=acoustic,
                shared_private=MISASharedPrivate(d_text=32, d_visual=visual.out_dim, d_acoustic=acoustic.out_dim,
                                                 hidden=128),
                fusion=MISAFusion(hidden=128, d_out=1, dropout=0.5))


def _reference_mhmf():
    """mhmf's defaults on the tiny BERT (width 32, 4 heads, 4 layers → audio (2, 4), vision (2, 3))."""
    from fusionkit.components.adapters import CrossAttentionAdapter, SelfAttentionAdapter
    from fusionkit.components.fusion import GatedFusion
    from fusionkit.components.heads import RegressionHead
    from fusionkit.components.memory import GRUMemory
    from fusionkit.components.restitution import Restitution
    from fusionkit.encoders.bert import build_bert_encoder
    from fusionkit.losses.restitution import RestitutionLoss
    from recipes.mhmf_bert import FusionStage, MHMFBert, scale_layers

    encoder = build_bert_encoder(config=tiny_bert_config())
    d, heads = encoder.hidden_size, encoder.num_heads
    audio, vision = scale_layers((7, 11), encoder.num_layers), scale_layers((6, 10), encoder.num_layers)
    adapter = dict(heads=heads, dropout=0.1, attn_dropout=0.0, ffn_dropout=0.0, ffn_ratio=4.0)

    def stages(layers):
        return nn.ModuleList(
            FusionStage(cross_attention=CrossAttentionAdapter(d_model=d, num_layers=3, **adapter),
                        memory=GRUMemory(dim=d), restitution=Restitution(dim=d, reduction=4, gate_lr_scale=100.0),
                        layer=l, restitution_layer=l)
            for l in layers)

    return MHMFBert(
        encoder=encoder, text_projections=nn.ModuleDict({str(l): nn.Identity() for l in sorted({*audio, *vision})}),
        audio_adapter=SelfAttentionAdapter(d_in=D_A, d_model=d, num_layers=2, **adapter),
        vision_adapter=SelfAttentionAdapter(d_in=D_V, d_model=d, num_layers=2, **adapter),
        audio_stages=stages(audio), vision_stages=stages(vision), gated_fusion=GatedFusion(dim=d),
        head=RegressionHead(d_in=2 * d, dropout=0.1), restitution_loss=RestitutionLoss(classes="polarity"),
        loss_weights=(0.1, 0.1))


def _reference_iccn_e2e():
    from baselines.iccn_e2e import ICCNEndToEnd
    from fusionkit.encoders.bert import build_bert_encoder

    encoder = build_bert_encoder(config=tiny_bert_config())
    create = fusionkit.create
    return ICCNEndToEnd(
        encoder=encoder, text_conv=create("temporal_conv", d_in=32, d_out=32, kernel_size=3),
        audio_encoder=create("lstm_sequence_encoder", d_in=D_A, d_hidden=16),
        video_encoder=create("lstm_sequence_encoder", d_in=D_V, d_hidden=16),
        outer_product=create("text_based_outer_product"),
        audio_cnn=create("outer_product_cnn", height=32, width=16, d_out=8, channels=(8, 16), dropout=0.1),
        video_cnn=create("outer_product_cnn", height=32, width=16, d_out=8, channels=(8, 16), dropout=0.1),
        head=create("regression_head", d_in=2 * 8 + 32, d_hidden=64, dropout=0.1),
        cca_loss=create("dcca_loss", r1=1e-3, r2=1e-3, mean=True), cca_weight=1.0)


REFERENCES = {"tfn": lambda: _reference_tfn_lmf("tfn"), "lmf": lambda: _reference_tfn_lmf("lmf"),
              "text": _reference_text, "misa": _reference_misa, "mhmf": _reference_mhmf, "iccn_e2e": _reference_iccn_e2e}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_default_build_is_bit_identical_to_the_blocks_built_directly(name):
    torch.manual_seed(0)
    model = _build(name)
    torch.manual_seed(0)
    reference = REFERENCES[name]()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    batch = random_batch(batch_size=4, seq_len=8, d_acoustic=D_A, d_visual=D_V, seed=1)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).prediction, reference(batch).prediction)


# -- records ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_model_json_records_the_composition_and_load_refuses_a_missing_plugin(tmp_path):
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.training import CheckpointError, TrainConfig, train_and_evaluate

    data = load_splits("synthetic", tokenizer=load_tokenizer(), max_samples=16, seed=0)
    config = TrainConfig(seed=0, out_dir=tmp_path, epochs=1, batch_size=8, quiet=True)
    kwargs = {"bert_config": tiny_bert_config(), "head": {"name": "regression_head", "d_hidden": 4}}
    train_and_evaluate("text", data, config, kwargs)
    description = json.loads((tmp_path / "best/model.json").read_text())
    assert description["composition"] == {
        "text_encoder": {"block": "bert_encoder", "plugin": "fusionkit", "args": {}},
        "head": {"block": "regression_head", "plugin": "fusionkit", "args": {"d_hidden": 4}}}
    loaded = fusionkit.load(tmp_path)
    assert loaded.model.head.net[1].out_features == 4
    description["composition"]["head"] = {"block": "ghost_head", "plugin": "ghost_blocks", "args": {}}
    description["kwargs"]["head"] = "ghost_head"
    (tmp_path / "best/model.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match=r"text\.head was built with block 'ghost_head' from plug-in "
                                              r"'ghost_blocks', which is not installed here; install"):
        fusionkit.load(tmp_path)


# -- an installed plug-in package, found through real entry-point discovery, via benchmarks.run ---------------
PLUGIN_SOURCE = '''
import torch
from torch import nn
import fusionkit


class AverageGateFusion(nn.Module):
    """Average of the four streams through one linear map: (..., dim) x 4 -> (..., dim)."""

    def __init__(self, *, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, g_vision, h_vision, g_audio, h_audio):
        return self.proj((g_vision + h_vision + g_audio + h_audio) / 4)


class HalfFusion(AverageGateFusion):
    """Misfit: returns half the width."""

    def forward(self, g_vision, h_vision, g_audio, h_audio):
        return super().forward(g_vision, h_vision, g_audio, h_audio)[..., ::2]


@fusionkit.hookimpl
def fusionkit_register_components(registry):
    registry.add("average_gate_fusion", AverageGateFusion, kind="fusion")
    registry.add("half_fusion", HalfFusion, kind="fusion")
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """A distribution ``fk-average-fusion`` installed into a directory put on ``PYTHONPATH``: its package and its
    ``.dist-info`` with ``entry_points.txt`` (group ``fusionkit``), as ``pip install --target`` lays them out."""
    site = tmp_path_factory.mktemp("site")
    (site / "fk_average_fusion").mkdir()
    (site / "fk_average_fusion/__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "fk_average_fusion-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fk-average-fusion\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fusionkit]\naverage_blocks = fk_average_fusion\n")
    (info / "RECORD").write_text("")
    return site


def _env(*paths) -> dict:
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "FUSIONKIT_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), root])
    env.setdefault("FUSIONKIT_DATA", "/work/shared/data")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _bench(args, env, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "benchmarks.run", "--models", "mhmf", "--dataset", "synthetic",
                           "--tiny-bert", "--max-samples", "32", "--epochs", "1", "--batch-size", "16", "--seeds", "1",
                           "--threads", "1", "--quiet", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_installed_plugin_fusion_runs_in_mhmf_via_benchmarks_run(installed_plugin, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    res = _bench(["--set", "mhmf.fusion=average_gate_fusion", "--out", str(out)], _env(installed_plugin), tmp_path)
    assert res.returncode == 0, res.stderr
    run = json.loads((out / "mhmf/seed0/run.json").read_text())
    assert run["kwargs"]["fusion"] == "average_gate_fusion"
    assert run["composition"]["fusion"] == {"block": "average_gate_fusion", "plugin": "average_blocks", "args": {}}
    assert run["composition"]["memory"] == {"block": "gru_memory", "plugin": "fusionkit", "args": {}}
    model_json = json.loads((out / "mhmf/seed0/best/model.json").read_text())
    assert model_json["composition"] == run["composition"]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["variants"]["mhmf"]["composition"]["fusion"]["plugin"] == "average_blocks"
    assert ("`mhmf` composition (slot=block): fusion=average_gate_fusion (plug-in average_blocks)"
            in (out / "results.md").read_text())

    code = ("import fusionkit, sys; p = fusionkit.load(sys.argv[1]); "
            "print(type(p.model.gated_fusion).__name__, round(p.predict('a fine film'), 6))")
    with_plugin = subprocess.run([sys.executable, "-c", code, str(out / "mhmf/seed0")], capture_output=True,
                                 text=True, env=_env(installed_plugin), cwd=tmp_path)
    assert with_plugin.returncode == 0, with_plugin.stderr
    assert with_plugin.stdout.split()[0] == "AverageGateFusion"
    without = subprocess.run([sys.executable, "-c", code, str(out / "mhmf/seed0")], capture_output=True, text=True,
                             env=_env(), cwd=tmp_path)
    assert without.returncode != 0
    assert ("mhmf.fusion was built with block 'average_gate_fusion' from plug-in 'average_blocks', which is not "
            "installed here" in without.stderr)


@pytest.mark.slow
def test_misfitting_plugin_block_exits_2_with_one_error_line_and_writes_nothing(installed_plugin, tmp_path):
    out = tmp_path / "out"
    res = _bench(["--set", "mhmf.fusion=half_fusion", "--out", str(out)], _env(installed_plugin), tmp_path)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and res.stderr.strip() == errors[0], res.stderr
    assert errors[0].startswith("error: mhmf.fusion: block 'half_fusion' (plug-in 'average_blocks') does not fit: "
                                "its output has shape (2, 3, 16), expected (2, 3, 32)")
    assert "forward(g_vision, h_vision, g_audio, h_audio)" in errors[0]
    assert not out.exists()


# -- dry runs on a subset of modalities --------------------------------------------------------------------
class EveryModalitySharedPrivate(nn.Module):
    """A misa.shared_private block that takes ``modalities`` but ignores it: it always projects all three."""

    def __init__(self, *, d_text: int, d_visual: int, d_acoustic: int, hidden: int, modalities=("t", "v", "a")):
        super().__init__()
        self.project = nn.ModuleList(nn.Linear(max(d, 1), hidden) for d in (d_text, d_visual, d_acoustic))

    def forward(self, text, visual, acoustic):
        from fusionkit.components.misa import SharedPrivateOutput

        out = tuple(p(x) for p, x in zip(self.project, (text, visual, acoustic)))
        return SharedPrivateOutput(projected=out, private=out, shared=out, recon=out)


@pytest.mark.parametrize("modalities", [("t", "a"), ("t", "v"), ("t", "a", "v")])
@pytest.mark.parametrize("model,slot", [("misa", "shared_private"), ("misa", "fusion"), ("mag", "gate"),
                                        ("mag", "text_encoder")])
def test_dry_run_feeds_the_present_modalities_only(model, slot, modalities):
    """The default block given as ``{"name": …}`` is dry-run (it is not the bare default) and fits every subset:
    the probe passes ``None`` for an absent modality and as many fused streams as are present."""
    default = slots_of(model)[slot].default
    built = _build(model, modalities=modalities, **{slot: {"name": default}})
    batch = random_batch(batch_size=4, seq_len=8, d_acoustic=D_A, d_visual=D_V, seed=3)
    batch = dataclasses.replace(batch, acoustic=batch.acoustic if "a" in modalities else None,
                                visual=batch.visual if "v" in modalities else None)
    out = built(batch)
    assert out.prediction.shape == (4,) and torch.isfinite(out.prediction).all()


def test_block_that_needs_every_modality_is_refused_on_a_subset(extra_blocks):
    _build("misa", shared_private="every_modality_shared_private")  # all three present: it fits
    with pytest.raises(SlotError, match=r"misa\.shared_private: block 'every_modality_shared_private' "
                                        r"\(plug-in 'test_blocks'\) does not fit: calling it on tiny inputs "
                                        r"raised TypeError"):
        _build("misa", modalities=("t", "a"), shared_private="every_modality_shared_private")


class PlainSharedPrivate(EveryModalitySharedPrivate):
    """A misa.shared_private block without a ``modalities`` keyword (it handles all three)."""

    def __init__(self, *, d_text: int, d_visual: int, d_acoustic: int, hidden: int) -> None:
        super().__init__(d_text=d_text, d_visual=d_visual, d_acoustic=d_acoustic, hidden=hidden)


class NoDropoutGate(nn.Module):
    """Fits mag.gate but takes neither ``dropout`` nor ``beta_shift``: z + a linear map of the acoustic rows."""

    def __init__(self, *, d_model: int, d_acoustic: int, d_visual: int) -> None:
        super().__init__()
        self.acoustic = nn.Linear(d_acoustic, d_model) if d_acoustic else None

    def forward(self, z, acoustic, visual):
        return z if self.acoustic is None or acoustic is None else z + self.acoustic(acoustic)


def test_block_without_modalities_fits_misa_with_every_modality_and_is_refused_on_a_subset(extra_blocks):
    _assert_trains(_build("misa", shared_private="plain_shared_private"))
    with pytest.raises(SlotError, match=r"misa\.shared_private: block 'plain_shared_private' \(plug-in "
                                        r"'test_blocks'\) does not take 'modalities'"):
        _build("misa", modalities=("t", "a"), shared_private="plain_shared_private")


def test_variant_compares_options_with_its_own_defaults_and_names_itself(extra_blocks):
    """mag_mmsa fixes dropout=0.3; a swapped gate that takes no dropout fits it as it fits mag, and errors in
    mag_mmsa's slots name mag_mmsa, not the base model."""
    _assert_trains(_build("mag_mmsa", gate="no_dropout_gate"))
    _assert_trains(_build("mag", gate="no_dropout_gate"))
    with pytest.raises(SlotError, match=r"mag_mmsa\.gate: block 'no_dropout_gate' \(plug-in 'test_blocks'\) does "
                                        r"not take 'dropout', which 'mag_mmsa''s dropout=0\.5 sets"):
        _build("mag_mmsa", gate="no_dropout_gate", dropout=0.5)
    with pytest.raises(SlotError, match=r"^mag_mmsa\.gate"):
        _build("mag_mmsa", gate="gru_memory")
