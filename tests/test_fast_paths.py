"""The cheaper implementations of fusion blocks compute what the plain ones compute."""
import pytest
import torch

from fusionkit.components.adapters import CrossAttentionAdapter, SelfAttentionAdapter
from fusionkit.components.attention import Attention, key_padding_bias
from fusionkit.components.memory import GRUMemory


def _mask(lengths, total):
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_fused_gate_gru_matches_nn_grucell(dtype, tol):
    torch.manual_seed(0)
    memory = GRUMemory(dim=12, d_input=8).to(dtype)
    x = torch.randn(3, 5, 8, dtype=dtype, requires_grad=True)
    h = torch.randn(3, 5, 12, dtype=dtype, requires_grad=True)
    fused = memory(x, h)
    plain = memory.cell(x.reshape(15, 8), h.reshape(15, 12)).reshape(3, 5, 12)
    torch.testing.assert_close(fused, plain, rtol=tol, atol=tol)
    weights = torch.randn_like(fused)
    inputs = [x, h, *memory.parameters()]
    for a, b in zip(torch.autograd.grad((fused * weights).sum(), inputs),
                    torch.autograd.grad((plain * weights).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert set(memory.state_dict()) == {"cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"}


def _per_layer_self_attention(adapter, x, mask):
    """SelfAttentionAdapter.forward with each layer building its own mask (the computation before the lever)."""
    x = adapter.proj(x)
    for layer in adapter.layers:
        x = layer(x, target_mask=mask)
    return adapter.norm(x) * mask.unsqueeze(-1).to(x.dtype)


def _per_layer_cross_attention(adapter, target, source, target_mask, source_mask):
    x = target
    for layer in adapter.layers:
        x = layer(x, source, source_mask=source_mask)
    return adapter.norm(x) * target_mask.unsqueeze(-1).to(x.dtype)


@pytest.mark.parametrize("training", [False, True])
def test_adapters_mask_once_equal_mask_per_layer(training):
    torch.manual_seed(0)
    sa = SelfAttentionAdapter(d_in=6, d_model=8, num_layers=2, heads=2, dropout=0.1).train(training)
    ca = CrossAttentionAdapter(d_model=8, d_source=10, num_layers=3, heads=2, dropout=0.1).train(training)
    x, source = torch.randn(3, 7, 6), torch.randn(3, 9, 10)
    mask, source_mask = _mask([7, 4, 1], 7), _mask([9, 2, 5], 9)
    for once, per_layer in ((lambda: sa(x, mask), lambda: _per_layer_self_attention(sa, x, mask)),
                            (lambda: ca(sa(x, mask), source, mask, source_mask),
                             lambda: _per_layer_cross_attention(ca, sa(x, mask), source, mask, source_mask))):
        torch.manual_seed(1)
        a = once()
        torch.manual_seed(1)
        b = per_layer()
        assert torch.equal(a, b)  # the same operations on the same values (dropout masks drawn alike)


def test_attention_takes_the_mask_or_its_sdpa_form_not_both():
    attn = Attention(dim=8, heads=2)
    x, mask = torch.randn(2, 4, 8), _mask([4, 2], 4)
    assert torch.equal(attn(x, context_mask=mask), attn(x, attn_mask=key_padding_bias(mask)))
    with pytest.raises(ValueError, match="context_mask or its key_padding_bias attn_mask, not both"):
        attn(x, context_mask=mask, attn_mask=key_padding_bias(mask))
