"""MHMF-BERT building blocks: adapters, GRU memory, restitution, gated fusion and the restitution loss."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import fusionkit
from fusionkit.components.adapters import CrossModalLayer
from fusionkit.losses.restitution import (
    Triplets,
    cosine_distance,
    sample_triplets,
    sentiment_classes,
    triplet_terms,
)

FAST = settings(max_examples=15, deadline=None)


def lengths_mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def scramble_padding(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with its padded positions replaced by other random values."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 10
    return torch.where(mask.unsqueeze(-1), x, noise)


@st.composite
def padded_batches(draw, max_batch: int = 3, max_len: int = 6):
    batch = draw(st.integers(1, max_batch))
    total = draw(st.integers(1, max_len))
    lengths = draw(st.lists(st.integers(1, total), min_size=batch, max_size=batch))
    return batch, total, lengths


# -- self-attention adapter ---------------------------------------------------------------------------
@FAST
@given(shape=padded_batches(), d_in=st.integers(1, 10), heads=st.sampled_from([1, 2]), per_head=st.integers(1, 4))
def test_self_attention_adapter_shape_and_padding_invariance(shape, d_in, heads, per_head):
    batch, total, lengths = shape
    torch.manual_seed(0)
    sa = fusionkit.create("self_attention_adapter", d_in=d_in, d_model=heads * per_head, heads=heads).eval()
    mask = lengths_mask(lengths, total)
    x = torch.randn(batch, total, d_in)
    out = sa(x, mask)
    assert out.shape == (batch, total, heads * per_head)
    assert torch.all(out[~mask] == 0)
    torch.testing.assert_close(sa(scramble_padding(x, mask, 1), mask)[mask], out[mask])


def test_self_attention_adapter_uses_the_mask():
    torch.manual_seed(0)
    sa = fusionkit.create("self_attention_adapter", d_in=4, d_model=8, heads=2).eval()
    x = torch.randn(1, 5, 4)
    masked = sa(x, lengths_mask([3], 5))[:, :3]
    unmasked = sa(x)[:, :3]
    assert not torch.allclose(masked, unmasked)


# -- cross-attention adapter --------------------------------------------------------------------------
@FAST
@given(
    target=padded_batches(max_batch=1, max_len=6),
    source_len=st.integers(1, 7),
    d_source=st.integers(1, 9),
    heads=st.sampled_from([1, 2]),
    seed=st.integers(0, 100),
)
def test_cross_attention_adapter_shape_and_padding_invariance(target, source_len, d_source, heads, seed):
    batch, total, lengths = target
    g = torch.Generator().manual_seed(seed)
    source_lengths = torch.randint(1, source_len + 1, (batch,), generator=g).tolist()
    torch.manual_seed(seed)
    d_model = 2 * heads
    ca = fusionkit.create("cross_attention_adapter", d_model=d_model, d_source=d_source, heads=heads).eval()
    t_mask, s_mask = lengths_mask(lengths, total), lengths_mask(source_lengths, source_len)
    tgt, src = torch.randn(batch, total, d_model, generator=g), torch.randn(batch, source_len, d_source, generator=g)
    out = ca(tgt, src, t_mask, s_mask)
    assert out.shape == (batch, total, d_model)
    assert torch.all(out[~t_mask] == 0)
    again = ca(scramble_padding(tgt, t_mask, 1), scramble_padding(src, s_mask, 2), t_mask, s_mask)
    torch.testing.assert_close(again[t_mask], out[t_mask])


def test_cross_attention_depends_on_the_source():
    torch.manual_seed(0)
    ca = fusionkit.create("cross_attention_adapter", d_model=8, d_source=6, heads=2).eval()
    tgt = torch.randn(2, 4, 8)
    assert not torch.allclose(ca(tgt, torch.randn(2, 3, 6)), ca(tgt, torch.randn(2, 3, 6)))


def test_cross_modal_layer_modes_and_errors():
    torch.manual_seed(0)
    self_layer = CrossModalLayer(dim=8, heads=2, self_attention=True)
    cross_layer = CrossModalLayer(dim=8, heads=2, d_source=5)
    x = torch.randn(2, 3, 8)
    assert self_layer(x).shape == (2, 3, 8)
    assert cross_layer(x, torch.randn(2, 4, 5)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="without source"):
        self_layer(x, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="pass source"):
        cross_layer(x)
    with pytest.raises(ValueError, match="shared_norm"):
        CrossModalLayer(dim=8, heads=2, d_source=5, shared_norm=True)
    with pytest.raises(ValueError, match="divisible"):
        CrossModalLayer(dim=6, heads=4)
    shared = CrossModalLayer(dim=8, heads=2, shared_norm=True)
    assert shared.norm_source is None and shared(x, torch.randn(2, 4, 8)).shape == (2, 3, 8)


# -- GRU memory -----------------------------------------------------------------------------------
@FAST
@given(batch=st.integers(1, 3), total=st.integers(1, 5), dim=st.integers(1, 8), d_input=st.integers(1, 8))
def test_gru_memory_equals_grucell_per_position(batch, total, dim, d_input):
    torch.manual_seed(0)
    memory = fusionkit.create("gru_memory", dim=dim, d_input=d_input)
    x, state = torch.randn(batch, total, d_input), torch.randn(batch, total, dim)
    out = memory(x, state)
    assert out.shape == (batch, total, dim)
    for b in range(batch):
        for t in range(total):
            torch.testing.assert_close(out[b, t], memory.cell(x[b, t][None], state[b, t][None])[0])


def test_gru_memory_rejects_mismatched_grids():
    memory = fusionkit.create("gru_memory", dim=4)
    with pytest.raises(ValueError, match="same"):
        memory(torch.randn(2, 3, 4), torch.randn(2, 5, 4))


# -- restitution --------------------------------------------------------------------------------------
@FAST
@given(shape=padded_batches(), dim=st.integers(2, 12), d_text=st.integers(1, 12), reduction=st.integers(1, 2))
def test_restitution_shapes_identities_and_padding(shape, dim, d_text, reduction):
    batch, total, lengths = shape
    torch.manual_seed(0)
    block = fusionkit.create("restitution", dim=dim, d_text=d_text, reduction=reduction)
    mask = lengths_mask(lengths, total)
    text, memory = torch.randn(batch, total, d_text), torch.randn(batch, total, dim)
    out = block(text, memory, mask)
    assert out.fused.shape == out.relevant.shape == out.irrelevant.shape == (batch, total, dim)
    assert out.attention.shape == (batch, dim)
    assert torch.all((out.attention > 0) & (out.attention < 1))
    torch.testing.assert_close(out.fused - memory, out.relevant)
    torch.testing.assert_close(out.relevant + out.irrelevant, block.text_proj(text) - memory)
    again = block(scramble_padding(text, mask, 1), scramble_padding(memory, mask, 2), mask)
    torch.testing.assert_close(again.attention, out.attention)
    torch.testing.assert_close(again.fused[mask], out.fused[mask])


def test_restitution_attention_is_channel_gate_of_mean_residual():
    torch.manual_seed(0)
    block = fusionkit.create("restitution", dim=4, reduction=2)
    text, memory = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    out = block(text, memory, mask)
    residual = text - memory
    w1, w2 = block.gate[0], block.gate[2]
    expected = torch.sigmoid(w2(torch.relu(w1(residual[0, :2].mean(0)))))
    torch.testing.assert_close(out.attention[0], expected)
    torch.testing.assert_close(out.relevant, expected * residual)
    # one text vector per sample (unaligned streams) is broadcast over time
    pooled = block(text[:, 0], memory, mask)
    torch.testing.assert_close(pooled.relevant + pooled.irrelevant, text[:, :1] - memory)


def test_restitution_errors():
    with pytest.raises(ValueError, match="reduction"):
        fusionkit.create("restitution", dim=4, reduction=8)
    assert isinstance(fusionkit.create("restitution", dim=4, d_text=4).text_proj, nn.Identity)


# -- gated fusion -------------------------------------------------------------------------------------
def test_gated_fusion_matches_equation():
    torch.manual_seed(0)
    fusion = fusionkit.create("gated_fusion", dim=3)
    g_v, h_v, g_a, h_a = torch.randn(4, 2, 5, 3).unbind(0)
    out = fusion(g_v, h_v, g_a, h_a)
    lin_v, lin_a = fusion.gate_vision[0], fusion.gate_audio[0]
    gate_v = torch.relu(torch.cat([g_v, h_v], -1) @ lin_v.weight.T + lin_v.bias)
    gate_a = torch.relu(torch.cat([g_a, h_a], -1) @ lin_a.weight.T + lin_a.bias)
    assert out.shape == (2, 5, 3)
    torch.testing.assert_close(out, gate_v * g_v + gate_a * g_a)


# -- restitution loss ---------------------------------------------------------------------------------
def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_cosine_distance_exact_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 1.0]])
    y = torch.tensor([[0.0, 3.0], [-2.0, 0.0], [1.0, 1.0], [4.0, 2.0]])
    expected = torch.tensor([0.5, 1.0, 0.5 - 0.5 / math.sqrt(2), 0.0])
    torch.testing.assert_close(cosine_distance(x, y), expected)


def test_restitution_loss_exact_small_case():
    # T = 1, three samples: classes (polarity) 1, 1, 0 → anchors 0 (p=1, n=2) and 1 (p=0, n=2); 2 has no positive
    g_tilde = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])
    relevant = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]])
    irrelevant = -relevant
    labels = torch.tensor([1.0, 2.0, -1.0])
    out = fusionkit.create("restitution_loss")(g_tilde, relevant, irrelevant, labels)
    s = 0.5 / math.sqrt(2)  # cos 45° / 2
    # anchor 0: d(F,p)=.5, d(F,n)=1, d(F+,p)=.5-s, d(F+,n)=.5+s, d(F−,p)=.5+s, d(F−,n)=.5+s
    plus0, minus0 = softplus(-s) + softplus(0.5 - s), softplus(-s) + softplus(s - 0.5)
    # anchor 1: d(F,p)=.5, d(F,n)=.5, d(F+,p)=.5-s, d(F+,n)=.5, d(F−,p)=.5+s, d(F−,n)=.5
    plus1, minus1 = softplus(-s) + math.log(2), softplus(-s) + math.log(2)
    assert out.plus.item() == pytest.approx((plus0 + plus1) / 2, rel=1e-5)
    assert out.minus.item() == pytest.approx((minus0 + minus1) / 2, rel=1e-5)
    assert out.total.item() == pytest.approx(out.plus.item() + out.minus.item(), rel=1e-6)


@FAST
@given(shape=padded_batches(max_batch=6), dim=st.integers(1, 6), seed=st.integers(0, 1000))
def test_restitution_loss_is_non_negative(shape, dim, seed):
    batch, total, lengths = shape
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(batch, total, dim, generator=g) for _ in range(3)]
    labels = torch.randn(batch, generator=g) * 2
    out = fusionkit.create("restitution_loss", seed=seed)(*tensors, labels, lengths_mask(lengths, total))
    assert out.total.item() >= 0 and out.plus.item() >= 0 and out.minus.item() >= 0


def test_restitution_loss_minus_part_is_2ln2_when_gate_is_one():
    torch.manual_seed(0)
    block = fusionkit.create("restitution", dim=4, reduction=2)
    with torch.no_grad():  # W2 = 0, b2 large → a ≡ 1 exactly, so R− = 0 and F− = F
        block.gate[2].weight.zero_()
        block.gate[2].bias.fill_(100.0)
    memory = torch.randn(6, 3, 4)
    out = block(torch.randn(6, 3, 4), memory)
    assert torch.all(out.attention == 1) and torch.all(out.irrelevant == 0)
    labels = torch.tensor([1.0, 2.0, 0.5, -1.0, -2.0, -0.5])
    loss = fusionkit.create("restitution_loss")(memory, out.relevant, out.irrelevant, labels)
    assert loss.minus.item() == pytest.approx(2 * math.log(2), rel=1e-6)


@FAST
@given(seed=st.integers(0, 10_000), t=st.floats(0.1, 1.0))
def test_moving_anchor_plus_toward_positive_lowers_plus_term(seed, t):
    g = torch.Generator().manual_seed(seed)
    f, f_plus = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    f_plus[2] = -f_plus[1]  # negative opposite to the positive: approaching p moves away from n
    cos = torch.cosine_similarity(f_plus[0], f_plus[1], dim=0).item()
    assume(-0.9 < cos < 0.99)
    triplet = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    before, _ = triplet_terms(f, f_plus, f, triplet)
    moved = f_plus.clone()
    moved[0] = f_plus[0] + t * (f_plus[1] - f_plus[0])
    after, _ = triplet_terms(f, moved, f, triplet)
    assert after.item() < before.item()


@FAST
@given(labels=st.lists(st.floats(-3, 3), min_size=1, max_size=8), scheme=st.sampled_from(["polarity", "acc7"]))
def test_triplet_sampling_respects_classes(labels, scheme):
    classes = sentiment_classes(torch.tensor(labels), scheme)
    triplets = sample_triplets(classes, torch.Generator().manual_seed(0))
    a, p, n = triplets
    assert torch.all(classes[a] == classes[p]) and torch.all(a != p)
    assert torch.all(classes[a] != classes[n])
    valid = [
        i for i in range(len(labels))
        if any(classes[j] == classes[i] and j != i for j in range(len(labels)))
        and any(classes[j] != classes[i] for j in range(len(labels)))
    ]
    assert a.tolist() == valid
    one = sample_triplets(classes, torch.Generator().manual_seed(0), num_triplets=1)
    assert one.anchor.numel() == min(1, len(valid))


def test_sentiment_classes():
    labels = torch.tensor([-3.4, -0.5, 0.0, 0.4, 2.6])
    assert sentiment_classes(labels).tolist() == [0, 0, 1, 1, 1]
    assert sentiment_classes(labels, "acc7").tolist() == [-3, 0, 0, 0, 3]
    with pytest.raises(ValueError, match="polarity"):
        sentiment_classes(labels, "acc2")


def test_triplet_sampling_is_seeded():
    classes = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    first = sample_triplets(classes, torch.Generator().manual_seed(3))
    second = sample_triplets(classes, torch.Generator().manual_seed(3))
    for x, y in zip(first, second):
        assert torch.equal(x, y)


def test_zero_triplet_batch_gives_zero_with_graph():
    g_tilde = torch.randn(3, 2, 4, requires_grad=True)
    relevant, irrelevant = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    out = fusionkit.create("restitution_loss")(g_tilde, relevant, irrelevant, torch.tensor([0.5, 1.0, 2.0]))
    assert out.total.item() == 0 and out.total.requires_grad
    out.total.backward()
    assert g_tilde.grad is not None and torch.all(g_tilde.grad == 0)


def test_restitution_loss_argument_errors():
    with pytest.raises(ValueError, match="class scheme"):
        fusionkit.create("restitution_loss", classes="binary")
    with pytest.raises(ValueError, match="num_triplets"):
        fusionkit.create("restitution_loss", num_triplets=0)
