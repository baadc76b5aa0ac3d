"""Blocks of the baselines: subnet, tensor_fusion, low_rank_fusion, multimodal_adaptation_gate, MISA's pieces,
MulT's crossmodal transformer."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusionkit
from fusionkit.components.low_rank_fusion import LowRankFusion
from fusionkit.components.mag import MultimodalAdaptationGate
from fusionkit.components.subnet import SubNet, TextSubNet
from fusionkit.components.tensor_fusion import TensorFusion

# -- subnet ------------------------------------------------------------------------------------------------------


def test_subnet_shape_relu_output_and_vector_input_check():
    net = SubNet(d_in=6, d_hidden=4, dropout=0.2)
    out = net(torch.randn(5, 6))
    assert out.shape == (5, 4) and (out >= 0).all()
    with pytest.raises(ValueError, match="one vector per sample"):
        net(torch.randn(5, 3, 6))
    with pytest.raises(ValueError, match="positive"):
        SubNet(d_in=0, d_hidden=4)


def test_subnet_single_sample_training_batch_uses_running_statistics():
    net = SubNet(d_in=3, d_hidden=2, dropout=0.0).train()
    net(torch.randn(8, 3) * 3 + 1)  # updates the running statistics
    stats = (net.norm.running_mean.clone(), net.norm.running_var.clone())
    x = torch.randn(1, 3)
    out = net(x)
    assert torch.equal(net.norm.running_mean, stats[0]) and torch.equal(net.norm.running_var, stats[1])
    assert torch.allclose(out, net.eval()(x))


def test_text_subnet_pools_real_tokens_only():
    net = TextSubNet(d_in=3, d_out=2, pooling="mean").eval()
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    changed = hidden.clone()
    changed[0, 2:] = 100.0  # padding must not matter
    assert torch.allclose(net(hidden, mask), net(changed, mask))
    expected = net.linear_1(hidden[0, :2].mean(0))
    assert torch.allclose(net(hidden, mask)[0], expected)
    cls = TextSubNet(d_in=3, d_out=2, pooling="cls").eval()
    assert torch.allclose(cls(hidden, mask), cls.linear_1(hidden[:, 0]))
    with pytest.raises(ValueError, match="pooling"):
        TextSubNet(d_in=3, d_out=2, pooling="max")


# -- tensor fusion -----------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(dims=st.lists(st.integers(1, 5), min_size=2, max_size=4), batch=st.integers(1, 3))
def test_tensor_fusion_size_is_product_of_dims_plus_one(dims, batch):
    fusion = TensorFusion(dims=dims)
    out = fusion(*[torch.randn(batch, d) for d in dims])
    assert fusion.out_dim == math.prod(d + 1 for d in dims)
    assert out.shape == (batch, fusion.out_dim)
    # the constant entry (1 ⊗ 1 ⊗ …) comes first and every unimodal vector appears verbatim
    assert torch.equal(out[:, 0], torch.ones(batch))


def test_tensor_fusion_exact_small_case():
    a, v, t = torch.tensor([[2.0]]), torch.tensor([[3.0, 5.0]]), torch.tensor([[7.0]])
    out = TensorFusion(dims=(1, 2, 1))(a, v, t)
    # [1, 2] ⊗ [1, 3, 5] ⊗ [1, 7], first modality slowest (the authors' flattening order)
    expected = [1, 7, 3, 21, 5, 35, 2, 14, 6, 42, 10, 70]
    assert out.tolist() == [expected]


def test_tensor_fusion_checks_inputs():
    fusion = TensorFusion(dims=(2, 3))
    with pytest.raises(ValueError, match="built for 2 vectors"):
        fusion(torch.randn(1, 2), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least two"):
        TensorFusion(dims=(3,))


# -- low-rank fusion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_fusion_equals_tensor_fusion_then_rank_r_linear(rank):
    torch.manual_seed(0)
    dims, d_out = (2, 3, 4), 2
    lmf = LowRankFusion(dims=dims, d_out=d_out, rank=rank)
    with torch.no_grad():
        lmf.fusion_bias.normal_()
    w1, w2, w3 = lmf.factors
    # the explicit weight of the linear map on the TFN tensor: W = Σ_r w_r · W_1^r ⊗ W_2^r ⊗ W_3^r
    weight = torch.einsum("r,rio,rjo,rko->ijko", lmf.fusion_weights[0], w1, w2, w3).reshape(-1, d_out)
    xs = [torch.randn(5, d, dtype=torch.float32) for d in dims]
    explicit = TensorFusion(dims=dims)(*xs) @ weight + lmf.fusion_bias
    assert torch.allclose(lmf(*xs), explicit, atol=1e-5)


def test_low_rank_fusion_shapes_and_checks():
    lmf = LowRankFusion(dims=(2, 3), d_out=5, rank=4)
    assert [tuple(f.shape) for f in lmf.factors] == [(4, 3, 5), (4, 4, 5)]
    assert lmf.fusion_weights.shape == (1, 4) and lmf.fusion_bias.shape == (1, 5)
    assert lmf(torch.randn(6, 2), torch.randn(6, 3)).shape == (6, 5)
    with pytest.raises(ValueError, match="positive d_out and rank"):
        LowRankFusion(dims=(2, 3), d_out=1, rank=0)


# -- multimodal adaptation gate ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    beta=st.floats(1e-3, 10.0),
    z_scale=st.floats(1e-2, 10.0),
    nv_scale=st.floats(0.0, 100.0),
    seed=st.integers(0, 1000),
)
def test_mag_shift_norm_is_bounded_by_beta_times_text_norm(beta, z_scale, nv_scale, seed):
    torch.manual_seed(seed)
    gate = MultimodalAdaptationGate(d_model=8, d_acoustic=3, d_visual=4, beta_shift=beta)
    z = torch.randn(2, 5, 8) * z_scale
    shift = gate.shift(z, torch.randn(2, 5, 3) * nv_scale, torch.randn(2, 5, 4) * nv_scale)
    assert (shift.norm(dim=-1) <= beta * z.norm(dim=-1) * (1 + 1e-5) + 1e-6).all()


def test_mag_exact_cases():
    torch.manual_seed(0)
    gate = MultimodalAdaptationGate(d_model=6, d_acoustic=2, d_visual=3, beta_shift=1.0, dropout=0.0)
    z = torch.randn(1, 4, 6)
    zeros_a, zeros_v = torch.zeros(1, 4, 2), torch.zeros(1, 4, 3)
    with torch.no_grad():
        for lin in (gate.W_v, gate.W_a):
            lin.bias.zero_()
    # no nonverbal signal → H = 0 (guarded, no NaN) and the output is LayerNorm(z)
    out = gate(z, zeros_a, zeros_v)
    assert torch.allclose(out, gate.LayerNorm(z))
    # a tiny shift passes unscaled (α = 1); a huge one is scaled to norm β‖z‖ (up to ε)
    a, v = torch.randn(1, 4, 2), torch.randn(1, 4, 3)
    with torch.no_grad():
        gate.W_hv.weight.zero_(), gate.W_ha.weight.zero_(), gate.W_hv.bias.fill_(1.0), gate.W_ha.bias.fill_(1.0)
    h = gate.W_v(v) + gate.W_a(a)
    assert torch.allclose(gate.shift(z, a * 1e-6, v * 1e-6), h * 1e-6)
    big = gate.shift(z, a * 1e6, v * 1e6)
    assert torch.allclose(big.norm(dim=-1), z.norm(dim=-1), rtol=1e-4)


def test_mag_as_bert_injection_changes_hidden_states_only_through_nonverbal_inputs():
    from fusionkit.encoders import build_bert_encoder
    from fusionkit.testing import random_batch, tiny_bert_config

    gate = MultimodalAdaptationGate(d_model=32, d_acoustic=5, d_visual=7, dropout=0.0)
    with torch.no_grad():
        gate.W_v.bias.zero_(), gate.W_a.bias.zero_()
    encoder = build_bert_encoder(config=tiny_bert_config(), injection=gate).eval()
    plain = build_bert_encoder(config=tiny_bert_config()).eval()
    plain.load_state_dict({k: v for k, v in encoder.state_dict().items() if not k.startswith("injection")})
    batch = random_batch(d_acoustic=5, d_visual=7)
    kw = dict(acoustic=torch.zeros_like(batch.acoustic), visual=torch.zeros_like(batch.visual))
    with torch.no_grad():
        silent = encoder(batch.input_ids, batch.mask, injection_inputs=kw).hidden_states
        base = plain(batch.input_ids, batch.mask).hidden_states
        moved = encoder(
            batch.input_ids, batch.mask, injection_inputs=dict(acoustic=batch.acoustic, visual=batch.visual)
        ).hidden_states
    # hidden_states[0] is the gate's output: with zero features it is LayerNorm(embeddings), else shifted
    assert torch.allclose(silent[0], gate.LayerNorm(base[0]), atol=1e-6)
    real = batch.mask.clone()
    real[:, 0] = False  # [CLS] and [SEP] carry zero features in aligned batches
    real[torch.arange(len(batch)), batch.mask.sum(1) - 1] = False
    shift = (moved[0] - silent[0]).norm(dim=-1)
    assert (shift[real] > 1e-3).all() and torch.allclose(shift[~real], torch.zeros(()), atol=1e-6)


def test_mag_rejects_unaligned_features():
    gate = MultimodalAdaptationGate(d_model=4, d_acoustic=2, d_visual=3)
    with pytest.raises(ValueError, match="aligned"):
        gate(torch.randn(1, 5, 4), torch.randn(1, 6, 2), torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="d_acoustic=2"):
        gate(torch.randn(1, 5, 4), torch.randn(1, 5, 3), torch.randn(1, 5, 3))


def test_blocks_are_registered_with_their_kinds():
    assert {"tensor_fusion", "low_rank_fusion", "multimodal_adaptation_gate"} <= set(
        fusionkit.list_components("fusion")
    )
    assert "subnet" in fusionkit.list_components("adapter")


# -- MISA ----------------------------------------------------------------------------------------------------------

from fusionkit.components.misa import MISAFusion, MISASequenceEncoder, MISASharedPrivate, reverse_gradient  # noqa: E402
from fusionkit.losses.misa import CMDLoss, DiffLoss, ReconLoss  # noqa: E402


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(2, 6), dim=st.integers(1, 5), seed=st.integers(0, 1000), shift=st.floats(-2.0, 2.0))
def test_cmd_is_zero_on_identical_batches_and_nonnegative_otherwise(batch, dim, seed, shift):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(batch, dim, generator=g), torch.rand(batch, dim, generator=g)
    cmd = CMDLoss(n_moments=5)
    assert cmd(x, x).item() == 0.0
    assert cmd(x, y).item() >= 0.0
    # the first moment alone sees a mean shift exactly
    assert torch.allclose(CMDLoss(n_moments=1)(x, x + shift), torch.tensor(abs(shift) * dim**0.5), atol=1e-5)


def test_cmd_exact_case_and_finite_gradient_at_zero():
    x = torch.tensor([[0.0], [2.0]])  # mean 1, central moments: k=2 → 1, k=3 → 0
    y = torch.tensor([[1.0], [1.0]])  # mean 1, all central moments 0
    assert torch.allclose(CMDLoss(n_moments=3)(x, y), torch.tensor(1.0))
    z = torch.rand(4, 3, requires_grad=True)
    CMDLoss()(z, z.detach()).backward()
    assert torch.isfinite(z.grad).all()


def test_diff_loss_zero_for_orthogonal_subspaces_positive_for_shared_ones():
    a = torch.tensor([1.0, -1.0, 0.0, 0.0])[:, None] * torch.tensor([[1.0, 2.0, -1.0]])
    b = torch.tensor([0.0, 0.0, 1.0, -1.0])[:, None] * torch.tensor([[3.0, 0.5]])
    loss = DiffLoss()
    assert loss(a, b).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(a, a).item() > 0.1
    with pytest.raises(ValueError, match="two batches"):
        loss(a, b[:3])


def test_recon_loss_is_mean_squared_error():
    pred, target = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert ReconLoss()(pred, target).item() == pytest.approx(2.5)


def test_misa_sequence_encoder_packs_and_ignores_padding():
    torch.manual_seed(0)
    enc = MISASequenceEncoder(d_in=3)
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = enc(x, mask)
    assert out.shape == (2, 12)
    noisy = x.clone()
    noisy[1, 2:] = 50.0
    assert torch.allclose(enc(noisy, mask), out)
    assert torch.allclose(enc(x[1:2, :2]), out[1:2], atol=1e-6)
    with pytest.raises(ValueError, match="no real time step"):
        enc(x, torch.zeros(2, 5, dtype=torch.bool))


def test_misa_shared_private_and_fusion_shapes():
    sp = MISASharedPrivate(d_text=6, d_visual=4, d_acoustic=8, hidden=10)
    out = sp(torch.randn(3, 6), torch.randn(3, 4), torch.randn(3, 8))
    assert all(t.shape == (3, 10) for field in out for t in field)
    assert all(((s > 0) & (s < 1)).all() for s in out.shared + out.private)  # sigmoid codes
    fused = MISAFusion(hidden=10, heads=2, ffn_dim=16)(out.private, out.shared)
    assert fused.prediction.shape == (3, 1) and fused.fused.shape == (3, 60)


def test_misa_fusion_transformer_matches_torch_encoder_layer():
    torch.manual_seed(0)
    fusion = MISAFusion(hidden=8, heads=2, ffn_dim=16).eval()
    ref = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True).eval()
    t = fusion.transformer
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([t.attn.to_q.weight, t.attn.to_kv.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([t.attn.to_q.bias, t.attn.to_kv.bias]))
        ref.self_attn.out_proj.load_state_dict(t.attn.to_out.state_dict())
        ref.linear1.load_state_dict(t.ffn.fc1.state_dict())
        ref.linear2.load_state_dict(t.ffn.fc2.state_dict())
        ref.norm1.load_state_dict(t.norm1.state_dict())
        ref.norm2.load_state_dict(t.norm2.state_dict())
    x = torch.randn(3, 6, 8)
    assert torch.allclose(t(x), ref(x), atol=1e-5)


def test_reverse_gradient_flips_and_scales():
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


# -- MulT's crossmodal transformer ---------------------------------------------------------------------------------

from fusionkit.components.crossmodal import (  # noqa: E402
    CrossmodalTransformer,
    SinusoidalPositions,
    TemporalConvProjection,
    future_mask,
)


def test_sinusoidal_positions_exact_values_and_padding():
    pos = SinusoidalPositions(dim=5)  # half = 2: frequencies 1 and 10000^-1; odd width → a zero column
    x = torch.zeros(1, 3, 5)
    out = pos(x, mask=torch.tensor([[True, True, False]]))
    for p in (1, 2):
        expected = [math.sin(p), math.sin(p * 1e-4), math.cos(p), math.cos(p * 1e-4), 0.0]
        assert torch.allclose(out[0, p - 1], torch.tensor(expected), atol=1e-6)
    assert torch.equal(out[0, 2], torch.zeros(5))


def test_future_mask_matches_mult_offsets():
    assert future_mask(3, 3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert future_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("attn_mask", [True, False])
def test_crossmodal_transformer_ignores_padding_and_respects_future_mask(attn_mask):
    torch.manual_seed(0)
    net = CrossmodalTransformer(dim=8, heads=2, layers=2, attn_mask=attn_mask).eval()
    x, s = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    s_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = net(x, s, mask, s_mask)
    assert out.shape == (2, 5, 8)
    changed = s.clone()
    changed[1, 3:] = 99.0  # padded source steps
    assert torch.allclose(net(x, changed, mask, s_mask), out, atol=1e-6)
    later = s.clone()
    later[0, 3:] = torch.randn(2, 8)  # future source steps of query 0..2
    moved = net(x, later, mask, s_mask)
    assert torch.allclose(moved[0, :3], out[0, :3], atol=1e-6) == attn_mask
    assert not torch.allclose(moved[0, 3:], out[0, 3:], atol=1e-4)


def test_crossmodal_memory_transformer_and_errors():
    mem = CrossmodalTransformer(dim=8, heads=2, layers=1, self_attention=True)
    assert mem(torch.randn(2, 4, 8)).shape == (2, 4, 8)
    with pytest.raises(ValueError, match="without source"):
        mem(torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    cross = CrossmodalTransformer(dim=8, heads=2, layers=1)
    with pytest.raises(ValueError, match="pass source"):
        cross(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="built for width 8"):
        cross(torch.randn(2, 4, 6), torch.randn(2, 4, 8))


def test_temporal_conv_projection():
    assert isinstance(TemporalConvProjection(d_in=4, d_out=4).conv, type(None))
    proj = TemporalConvProjection(d_in=4, d_out=6, kernel_size=3)
    assert proj(torch.randn(2, 7, 4)).shape == (2, 7, 6) and proj.conv.bias is None
    with pytest.raises(ValueError, match="odd"):
        TemporalConvProjection(d_in=4, d_out=6, kernel_size=2)
    # padded steps enter the convolution as zeros: real steps do not see what stands at the padding
    x, mask = torch.randn(2, 7, 4), torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    zeroed = x * mask[..., None]
    out = proj(x + 9.0 * ~mask[..., None], mask)
    assert torch.allclose(out[mask], proj(zeroed)[mask], atol=1e-6)
    assert torch.allclose(out[0], proj(x)[0], atol=1e-6)
