"""iccn_e2e (the end-to-end ICCN variant) and its blocks: outer products by hand, padding invariance, the DCCA term, CLI training."""
import json
from dataclasses import replace

import pytest
import torch

import benchmarks.run as bench
import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config

D_A, D_V = 5, 7


def _model(**kw):
    torch.manual_seed(0)
    return fusionkit.create("iccn_e2e", bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **kw)


def test_outer_product_by_hand():
    text = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1, 3, 2); the last step is padding
    other = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [5.0, 5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    got = fusionkit.create("text_based_outer_product")(text, other, mask)
    expected = (torch.outer(text[0, 0], other[0, 0]) + torch.outer(text[0, 1], other[0, 1])) / 2
    assert got.shape == (1, 2, 3) and torch.allclose(got[0], expected)
    with pytest.raises(ValueError, match="word-aligned sequences"):
        fusionkit.create("text_based_outer_product")(text, other[:, :2], mask)


@pytest.mark.parametrize("name, kw", [("temporal_conv", {"d_out": 4}), ("lstm_sequence_encoder", {"d_hidden": 4})])
def test_sequence_blocks_ignore_padding(name, kw):
    block = fusionkit.create(name, d_in=3, **kw).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 3, generator=g)
    padded = torch.cat([x, torch.randn(1, 4, 3, generator=g)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 4])
    short = block(x, torch.ones(1, 5, dtype=torch.bool))
    long = block(padded, mask)
    assert long.shape == (1, 9, 4)
    assert torch.allclose(long[:, :5], short, atol=1e-6) and (long[:, 5:] == 0).all()


def test_block_argument_errors():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        fusionkit.create("temporal_conv", d_in=3, d_out=4, kernel_size=2)
    with pytest.raises(ValueError, match="too small for 2 pooling stages"):
        fusionkit.create("outer_product_cnn", height=3, width=8, d_out=2)
    with pytest.raises(ValueError, match=r"built for \(B, 8, 6\) matrices"):
        fusionkit.create("outer_product_cnn", height=8, width=6, d_out=2)(torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="d_hidden must be positive"):
        fusionkit.create("lstm_sequence_encoder", d_in=3, d_hidden=0)
    with pytest.raises(ValueError, match="cca_weight must be ≥ 0"):
        _model(cca_weight=-1.0)


def test_dcca_term_ties_the_two_cnn_embeddings():
    model = _model().train()
    batch = random_batch(batch_size=6, seq_len=9, d_acoustic=D_A, d_visual=D_V)
    out = model(batch)
    assert set(out.loss_terms) == {"dcca"}
    dcca = out.loss_terms["dcca"]
    assert -1.0 <= dcca.item() <= 0.0  # weight 1 × the negative mean canonical correlation
    assert out.features.shape == (6, 2 * 8 + tiny_bert_config().hidden_size)
    model.zero_grad()
    dcca.backward()
    for part in ("audio_cnn", "video_cnn", "audio_encoder", "video_encoder", "text_conv"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, part
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.head.parameters())
    # no labels, a single sample or weight 0: no term
    assert model(replace(batch, label=None)).loss_terms == {}
    single = random_batch(batch_size=1, seq_len=9, d_acoustic=D_A, d_visual=D_V)
    assert model(single).loss_terms == {}
    assert _model(cca_weight=0.0)(batch).loss_terms == {}


def test_unaligned_batch_is_refused():
    batch = random_batch(batch_size=2, seq_len=6, d_acoustic=D_A, d_visual=D_V)
    unaligned = replace(batch, acoustic_mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="word-piece aligned batches"):
        _model()(unaligned)


@pytest.mark.slow
def test_iccn_e2e_trains_through_benchmarks_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "iccn_e2e"
    assert "iccn_e2e" in bench.resolve_models("all")
    assert bench.main(["--models", "iccn_e2e", "--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size",
                       "8", "--max-samples", "16", "--tiny-bert", "--quiet", "--out", str(out)]) == 0
    log = [json.loads(line) for line in (out / "iccn_e2e" / "seed0" / "log.jsonl").read_text().splitlines()]
    epochs = [entry for entry in log if "epoch" in entry and "train_loss" in entry]
    assert epochs and "dcca" in json.dumps(epochs[-1])
    assert "| iccn_e2e ⚠ |" in (out / "results.md").read_text()  # one epoch: flagged as still improving
