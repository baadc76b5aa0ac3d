"""The ``mhmf`` recipe (MHMF-BERT) on a tiny random BERT."""
from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config
from recipes.mhmf_bert import MHMFBert, scale_layers

D_A, D_V = 5, 3
SMALL = dict(d_acoustic=D_A, d_visual=D_V, d_fusion=16, heads=2)


def build(num_layers: int = 4, **kw) -> MHMFBert:
    torch.manual_seed(0)
    return fusionkit.create("mhmf", bert_config=tiny_bert_config(num_layers=num_layers), **(SMALL | kw))


def batch(**kw):
    return random_batch(d_acoustic=D_A, d_visual=D_V, **({"batch_size": 6, "seq_len": 8} | kw))


@functools.lru_cache(maxsize=None)
def eval_model() -> MHMFBert:
    return build().eval()


def test_forward_backward_every_parameter_gets_a_gradient():
    model = build().train()
    out = model(batch())
    assert out.prediction.shape == (6,)
    assert out.features.shape == (6, 16 + 32)
    assert sorted(out.loss_terms) == [f"restitution/{m}/{i}" for m in ("audio", "vision") for i in (1, 2)]
    for term in out.loss_terms.values():
        assert term.dim() == 0 and term.item() > 0
    (out.prediction.sum() + sum(out.loss_terms.values())).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_scale_layers_rounds_half_up():
    assert scale_layers((7, 11), 6) == (4, 6)
    assert scale_layers((6, 10), 6) == (3, 5)
    assert scale_layers((7, 11), 12) == (7, 11)
    assert scale_layers((9,), 6) == (5,)  # 4.5 → 5 (Python's round would give 4)
    assert scale_layers((6, 10), 1) == (1, 1)
    assert scale_layers((7, 11), 24) == (14, 22)


def test_default_layers_follow_the_encoder_depth():
    model = build(num_layers=6)
    assert [s.layer for s in model.audio_stages] == [4, 6]
    assert [s.layer for s in model.vision_stages] == [3, 5]
    assert [s.restitution_layer for s in model.audio_stages] == [4, 6]
    assert sorted(model.text_projections) == ["3", "4", "5", "6"]
    assert all(isinstance(p, nn.Linear) for p in model.text_projections.values())


def test_separate_restitution_layers():
    model = build(audio_layers=(1, 2), vision_layers=(1, 2), restitution_layers_audio=(3, 4))
    assert [s.restitution_layer for s in model.audio_stages] == [3, 4]
    assert [s.restitution_layer for s in model.vision_stages] == [1, 2]
    assert sorted(model.text_projections) == ["1", "2", "3", "4"]
    model.train()(batch())


@pytest.mark.parametrize("layers", [(0, 3), (2, 5)])
def test_bad_layer_index_is_a_clear_error(layers):
    bad = [l for l in layers if not 1 <= l <= 4][0]
    with pytest.raises(ValueError, match=rf"audio_layers contains layer {bad}, but the text encoder has 4 layers.*1\.\.4"):
        build(audio_layers=layers)


def test_stage_count_errors():
    with pytest.raises(ValueError, match="num_stages=3"):
        build(num_stages=3)
    with pytest.raises(ValueError, match="one BERT layer per stage"):
        build(audio_layers=(1, 2, 3))
    with pytest.raises(ValueError, match="loss_weights"):
        build(loss_weights=(0.1, 0.2, 0.3))
    model = build(num_stages=3, audio_layers=(1, 2, 3), vision_layers=(2, 3, 4)).train()
    assert "restitution/vision/3" in model(batch()).loss_terms


def test_restitution_ablation_has_no_loss_terms():
    model = build(restitution=False).train()
    assert all(stage.restitution is None for stage in model.audio_stages)
    out = model(batch())
    assert out.loss_terms == {}
    out.prediction.sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_loss_terms_only_in_training_with_labels():
    model = build().train()
    assert model(batch(labels=False)).loss_terms == {}
    assert model.eval()(batch()).loss_terms == {}


def test_loss_weights_scale_the_terms():
    b = batch()
    plain = build(dropout=0.0, loss_weights=1.0).train()(b).loss_terms
    weighted = build(dropout=0.0, loss_weights=(0.1, 0.5)).train()(b).loss_terms
    for branch in ("audio", "vision"):
        torch.testing.assert_close(weighted[f"restitution/{branch}/1"], 0.1 * plain[f"restitution/{branch}/1"])
        torch.testing.assert_close(weighted[f"restitution/{branch}/2"], 0.5 * plain[f"restitution/{branch}/2"])


def test_frozen_encoder_gets_no_gradients():
    model = build(encoder_mode="frozen").train()
    out = model(batch())
    (out.prediction.sum() + sum(out.loss_terms.values())).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("encoder."))


def test_full_width_fusion_uses_no_projection():
    model = build(d_fusion=32)
    assert all(isinstance(p, nn.Identity) for p in model.text_projections.values())
    assert model.eval()(batch()).features.shape == (6, 64)


@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(2, 8), min_size=3, max_size=3), seed=st.integers(0, 1000))
def test_prediction_ignores_padding(lengths, seed):
    model = eval_model()
    b = batch(batch_size=3, lengths=lengths, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    pad = ~b.mask
    scrambled = replace(
        b,
        input_ids=torch.where(pad, torch.randint(1000, 2000, b.input_ids.shape, generator=g), b.input_ids),
        acoustic=torch.where(pad[..., None], torch.randn(b.acoustic.shape, generator=g), b.acoustic),
        visual=torch.where(pad[..., None], torch.randn(b.visual.shape, generator=g), b.visual),
    )
    with torch.no_grad():
        torch.testing.assert_close(model(scrambled).prediction, model(b).prediction)


def unaligned(b, t_a: int, t_v: int, lengths_a: list[int], lengths_v: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a_mask = torch.arange(t_a)[None] < torch.tensor(lengths_a)[:, None]
    v_mask = torch.arange(t_v)[None] < torch.tensor(lengths_v)[:, None]
    return replace(
        b,
        acoustic=torch.randn(len(b), t_a, D_A, generator=g) * a_mask[..., None],
        visual=torch.randn(len(b), t_v, D_V, generator=g) * v_mask[..., None],
        acoustic_mask=a_mask,
        visual_mask=v_mask,
    )


def test_unaligned_batch():
    model = build().train()
    b = unaligned(batch(batch_size=3), t_a=11, t_v=5, lengths_a=[11, 4, 7], lengths_v=[5, 2, 3])
    assert not b.aligned
    out = model(b)
    assert out.prediction.shape == (3,) and out.features.shape == (3, 48)
    assert len(out.loss_terms) == 4
    (out.prediction.sum() + sum(out.loss_terms.values())).backward()
    model.eval()
    scrambled = replace(
        b,
        acoustic=torch.where(b.acoustic_mask[..., None], b.acoustic, torch.full_like(b.acoustic, 5.0)),
        visual=torch.where(b.visual_mask[..., None], b.visual, torch.full_like(b.visual, -5.0)),
    )
    with torch.no_grad():
        torch.testing.assert_close(model(scrambled).prediction, model(b).prediction)


def test_train_defaults():
    defaults = MHMFBert.train_defaults
    assert defaults["encoder_lr"] == 5e-5 and defaults["lr"] == 1e-4 and defaults["batch_size"] == 32


def test_text_only_ablation_runs_and_nonverbal_input_matters():
    """Zeroed audio and visual (the single-modality ablation) give finite predictions that differ from the
    multimodal ones: the nonverbal branches do reach the prediction."""
    model, full = eval_model(), batch()
    silent = replace(full, acoustic=torch.zeros_like(full.acoustic), visual=torch.zeros_like(full.visual))
    with torch.no_grad():
        out, ablated = model(full), model(silent)
    assert torch.isfinite(ablated.prediction).all() and torch.isfinite(ablated.features).all()
    assert not torch.allclose(out.prediction, ablated.prediction)


def test_text_control_ignores_nonverbal_input():
    torch.manual_seed(0)
    model = fusionkit.create("text", bert_config=tiny_bert_config()).eval()
    full = batch()
    silent = replace(full, acoustic=torch.zeros_like(full.acoustic), visual=torch.zeros_like(full.visual))
    with torch.no_grad():
        torch.testing.assert_close(model(full).prediction, model(silent).prediction, rtol=0, atol=0)


def test_default_is_the_papers_width_without_projection_and_small_variant_is_narrow():
    config = tiny_bert_config(hidden_size=64, heads=4, num_layers=4)
    paper = fusionkit.create("mhmf", bert_config=config, d_acoustic=D_A, d_visual=D_V)
    assert not any(isinstance(m, nn.Linear) for m in paper.text_projections.values())
    assert paper.audio_adapter.proj.out_features == 64
    assert paper.audio_stages[0].cross_attention.layers[0].attn.heads == 4  # BERT's head width, 16
    out = paper.eval()(batch())
    assert out.features.shape == (6, 64 + 64)

    small = fusionkit.create("mhmf_small", bert_config=config, d_acoustic=D_A, d_visual=D_V)
    assert small.audio_adapter.proj.out_features == 32
    assert small.audio_stages[0].cross_attention.layers[0].attn.heads == 2
    assert all(isinstance(m, nn.Linear) and m.out_features == 32 for m in small.text_projections.values())
    assert small.eval()(batch()).features.shape == (6, 32 + 64)


def test_heads_must_divide_the_fusion_width():
    with pytest.raises(ValueError, match=r"d_fusion=30 is not divisible by heads=4"):
        build(d_fusion=30, heads=4)


def test_diagnostics_in_train_and_eval_mode():
    model = build().train()
    b = batch(batch_size=8)
    b = replace(b, label=torch.tensor([-2.0, -1.0, -0.5, -0.1, 0.0, 0.5, 1.0, 2.0]))
    out = model(b)
    stages = [f"restitution/{m}/{i}" for m in ("audio", "vision") for i in (1, 2)]
    for key in stages:
        loss = out.diagnostics[f"{key}/loss"]
        # weighted term = λ · unweighted loss; the loss is ≥ 4·softplus(−1) (distances lie in [0, 1])
        assert out.loss_terms[key].item() == pytest.approx(0.1 * loss.item())
        assert loss.item() >= 4 * torch.nn.functional.softplus(torch.tensor(-1.0)).item()
        assert 0 <= out.diagnostics[f"{key}/gate_dev"].item() < 0.5
        for view in ("F", "F+", "F-"):
            assert -1 <= out.diagnostics[f"{key}/margin_{view}"].item() <= 1
    assert out.diagnostics["restitution/floor_at_gate_half"].item() == pytest.approx(4 * math.log(2))
    evaluated = model.eval()(b)
    assert evaluated.loss_terms == {}
    assert f"{stages[0]}/loss" not in evaluated.diagnostics and f"{stages[0]}/margin_F" in evaluated.diagnostics
    # evaluation draws no triplets: the training generator is untouched
    state = model.restitution_loss.generator.get_state()
    model(b)
    assert torch.equal(state, model.restitution_loss.generator.get_state())


def test_restitution_gate_trains_at_its_own_learning_rate():
    from fusionkit.training.optim import param_groups

    model = build(gate_lr_scale=50.0)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, encoder_lr=5e-5, weight_decay=0.01)}
    gate = {id(p) for stages in (model.audio_stages, model.vision_stages) for s in stages
            for p in s.restitution.gate.parameters()}
    scaled = {id(p) for name in ("head_x50", "head_no_decay_x50") for p in groups[name]["params"]}
    assert scaled == gate and groups["head_x50"]["lr"] == pytest.approx(5e-3)
    assert groups["head"]["lr"] == 1e-4 and groups["encoder"]["lr"] == 5e-5
    assert not gate & {id(p) for name in ("head", "head_no_decay", "encoder") for p in groups[name]["params"]}
    with pytest.raises(ValueError, match="gate_lr_scale must be positive"):
        build(gate_lr_scale=0.0)
