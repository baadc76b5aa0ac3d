"""The authors' initialisations: per-tensor statistics, zero biases, and same-seed determinism."""
import math

import pytest
import torch
from torch import nn

import fusionkit
from fusionkit.testing import tiny_bert_config

D = 64  # wide enough for tight per-tensor statistics (12288 values in a packed in_proj)


def _uniform_std(bound: float) -> float:
    return bound / math.sqrt(3.0)


def _xavier_uniform_std(fan_in: int, fan_out: int) -> float:
    return _uniform_std(math.sqrt(6.0 / (fan_in + fan_out)))


def _default_linear_std(fan_in: int) -> float:
    return _uniform_std(1.0 / math.sqrt(fan_in))  # nn.Linear: kaiming_uniform(a=√5) → U(±1/√fan_in)


def _assert_uniform(w: torch.Tensor, std: float, rel: float = 0.05) -> None:
    assert w.std().item() == pytest.approx(std, rel=rel)
    assert w.abs().max().item() <= std * math.sqrt(3.0) + 1e-7  # inside the uniform's bound
    assert abs(w.mean().item()) < 0.1 * std


def test_mult_attention_and_ffn_follow_the_authors():
    torch.manual_seed(0)
    block = fusionkit.create("crossmodal_transformer", dim=D, heads=4, layers=2)
    for layer in block.layers:
        attn = layer.attn
        packed = torch.cat([attn.to_q.weight, attn.to_kv.weight])  # the authors' in_proj_weight (3D, D)
        _assert_uniform(packed, _xavier_uniform_std(D, 3 * D))
        _assert_uniform(attn.to_out.weight, _xavier_uniform_std(D, D))
        _assert_uniform(layer.ffn.fc1.weight, _xavier_uniform_std(D, 4 * D))
        _assert_uniform(layer.ffn.fc2.weight, _xavier_uniform_std(4 * D, D))
        for bias in (attn.to_q.bias, attn.to_kv.bias, attn.to_out.bias, layer.ffn.fc1.bias, layer.ffn.fc2.bias):
            assert torch.count_nonzero(bias) == 0
        # one packed draw, not three separate ones: q alone has the packed matrix's (smaller) spread
        assert attn.to_q.weight.std().item() == pytest.approx(_xavier_uniform_std(D, 3 * D), rel=0.08)


def test_mult_model_attention_biases_are_zero():
    torch.manual_seed(0)
    model = fusionkit.create("mult", bert_config=tiny_bert_config(), d_acoustic=5, d_visual=7, d_model=12, heads=2,
                             layers=1)
    biases = {n: p for n, p in model.named_parameters() if ".attn." in n and n.endswith("bias")}
    assert biases and all(torch.count_nonzero(p) == 0 for p in biases.values())


def test_misa_fusion_transformer_matches_nn_transformer_encoder_layer_init():
    torch.manual_seed(0)
    fusion = fusionkit.create("misa_fusion", hidden=D, ffn_dim=256)
    layer = fusion.transformer
    reference = nn.TransformerEncoderLayer(d_model=D, nhead=2, dim_feedforward=256)
    packed = torch.cat([layer.attn.to_q.weight, layer.attn.to_kv.weight])
    assert packed.shape == reference.self_attn.in_proj_weight.shape
    _assert_uniform(packed, _xavier_uniform_std(D, 3 * D))
    _assert_uniform(reference.self_attn.in_proj_weight.detach(), _xavier_uniform_std(D, 3 * D))
    # out_proj keeps nn.Linear's weight init; its bias and the in_proj biases are zero, as in PyTorch's layer
    _assert_uniform(layer.attn.to_out.weight, _default_linear_std(D), rel=0.1)
    _assert_uniform(reference.self_attn.out_proj.weight.detach(), _default_linear_std(D), rel=0.1)
    for bias in (layer.attn.to_q.bias, layer.attn.to_kv.bias, layer.attn.to_out.bias):
        assert torch.count_nonzero(bias) == 0
    assert torch.count_nonzero(reference.self_attn.in_proj_bias) == 0
    assert torch.count_nonzero(reference.self_attn.out_proj.bias) == 0
    # the feed-forward linears are nn.Linear defaults in both (non-zero biases)
    _assert_uniform(layer.ffn.fc1.weight, _default_linear_std(D), rel=0.1)
    assert torch.count_nonzero(layer.ffn.fc1.bias) > 0


def test_misa_model_attention_biases_are_zero():
    torch.manual_seed(0)
    model = fusionkit.create("misa", bert_config=tiny_bert_config(), d_acoustic=5, d_visual=7, hidden=16)
    attn = model.fusion.transformer.attn
    assert all(torch.count_nonzero(b) == 0 for b in (attn.to_q.bias, attn.to_kv.bias, attn.to_out.bias))


def test_lmf_factors_xavier_normal_and_zero_bias():
    torch.manual_seed(0)
    fusion = fusionkit.create("low_rank_fusion", dims=(63, 63, 63), d_out=64, rank=8)
    for factor in fusion.factors:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(factor)
        assert factor.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.05)
    assert torch.count_nonzero(fusion.fusion_bias) == 0


def test_mag_gate_initialised_like_bert():
    torch.manual_seed(0)
    config = tiny_bert_config()
    model = fusionkit.create("mag", bert_config=config, d_acoustic=40, d_visual=40)
    gate = model.encoder.injection
    for linear in (gate.W_hv, gate.W_ha, gate.W_v, gate.W_a, model.classifier):
        assert linear.weight.std().item() == pytest.approx(config.initializer_range, rel=0.15)
        assert torch.count_nonzero(linear.bias) == 0


MODELS = ("tfn", "lmf", "mult", "misa", "mag", "mag_mmsa", "iccn", "iccn_e2e")


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_weights(name):
    def build(seed):
        torch.manual_seed(seed)
        return fusionkit.create(name, bert_config=tiny_bert_config(), d_acoustic=5, d_visual=7).state_dict()

    a, b, c = build(0), build(0), build(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
