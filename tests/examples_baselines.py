"""Small examples of the baseline models and their blocks, for ``tests/test_all_components.py``."""
from __future__ import annotations

import torch

import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config

D_A, D_V = 5, 7
EXAMPLES: dict = {}


def _vectors(*dims: int, batch: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=g) for d in dims]


def _batch(**kw):
    return random_batch(batch_size=4, seq_len=8, d_acoustic=D_A, d_visual=D_V, **kw)


def _model(name: str, **kw):
    return fusionkit.create(name, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **kw)


EXAMPLES["subnet"] = dict(
    build=lambda: fusionkit.create("subnet", d_in=6, d_hidden=4, dropout=0.1),
    run=lambda m: m(*_vectors(6)),
    no_grad=(),
)
EXAMPLES["text_subnet"] = dict(
    build=lambda: fusionkit.create("text_subnet", d_in=6, d_out=3, dropout=0.1),
    run=lambda m: m(torch.randn(4, 5, 6), torch.arange(5)[None, :] < torch.tensor([5, 4, 2, 1])[:, None]),
    no_grad=(),
)
EXAMPLES["tensor_fusion"] = dict(
    build=lambda: fusionkit.create("tensor_fusion", dims=(2, 3, 4)),
    run=lambda m: m(*[v.requires_grad_() for v in _vectors(2, 3, 4)]),
    no_grad=(),
)
EXAMPLES["low_rank_fusion"] = dict(
    build=lambda: fusionkit.create("low_rank_fusion", dims=(2, 3, 4), d_out=3, rank=2),
    run=lambda m: m(*_vectors(2, 3, 4)),
    no_grad=(),
)


def _run_mag(m):
    b = _batch()
    z = torch.randn(*b.input_ids.shape, 16, generator=torch.Generator().manual_seed(1))
    return m(z, acoustic=b.acoustic, visual=b.visual)


EXAMPLES["multimodal_adaptation_gate"] = dict(
    build=lambda: fusionkit.create("multimodal_adaptation_gate", d_model=16, d_acoustic=D_A, d_visual=D_V),
    run=_run_mag,
    no_grad=(),
)

for _name in ("tfn", "lmf", "mag", "mag_mmsa", "iccn", "iccn_e2e"):
    EXAMPLES[_name] = dict(build=lambda n=_name: _model(n), run=lambda m: m(_batch()), no_grad=())


def _pair(*dims: int):
    a, b = _vectors(*dims, seed=3)
    return a.requires_grad_(), b.requires_grad_()


EXAMPLES["cmd_loss"] = dict(build=lambda: fusionkit.create("cmd_loss"), run=lambda m: m(*_pair(6, 6)), no_grad=())
EXAMPLES["diff_loss"] = dict(build=lambda: fusionkit.create("diff_loss"), run=lambda m: m(*_pair(6, 4)), no_grad=())
EXAMPLES["recon_loss"] = dict(build=lambda: fusionkit.create("recon_loss"), run=lambda m: m(*_pair(6, 6)), no_grad=())
EXAMPLES["misa_sequence_encoder"] = dict(
    build=lambda: fusionkit.create("misa_sequence_encoder", d_in=D_A),
    run=lambda m: m(_batch().acoustic, _batch().mask),
    no_grad=(),
)
EXAMPLES["misa_shared_private"] = dict(
    build=lambda: fusionkit.create("misa_shared_private", d_text=6, d_visual=4, d_acoustic=8, hidden=10),
    run=lambda m: m(*_vectors(6, 4, 8)),
    no_grad=(),
)
EXAMPLES["misa_fusion"] = dict(
    build=lambda: fusionkit.create("misa_fusion", hidden=10, ffn_dim=16),
    run=lambda m: m(tuple(_vectors(10, 10, 10, seed=1)), tuple(_vectors(10, 10, 10, seed=2))),
    no_grad=(),
)
EXAMPLES["misa"] = dict(build=lambda: _model("misa"), run=lambda m: m(_batch()), no_grad=())


def _run_crossmodal(m):
    b = _batch()
    g = torch.Generator().manual_seed(2)
    return m(torch.randn(4, 8, 10, generator=g), torch.randn(4, 6, 10, generator=g), b.mask, b.mask[:, :6])


EXAMPLES["crossmodal_transformer"] = dict(
    build=lambda: fusionkit.create("crossmodal_transformer", dim=10, heads=2, layers=2),
    run=_run_crossmodal,
    no_grad=(),
)
EXAMPLES["crossmodal_cross_attention"] = dict(
    build=lambda: fusionkit.create("crossmodal_cross_attention", d_model=10, heads=2, num_layers=2),
    run=_run_crossmodal,
    no_grad=(),
)
EXAMPLES["mult"] = dict(
    build=lambda: _model("mult", d_model=12, heads=2, layers=1), run=lambda m: m(_batch()), no_grad=()
)


def _run_sequence(m):
    b = _batch(lengths=[8, 5, 3, 6])
    return m(b.acoustic.requires_grad_(), b.mask)


EXAMPLES["lstm_sequence_encoder"] = dict(
    build=lambda: fusionkit.create("lstm_sequence_encoder", d_in=D_A, d_hidden=6), run=_run_sequence, no_grad=()
)
EXAMPLES["temporal_conv"] = dict(
    build=lambda: fusionkit.create("temporal_conv", d_in=D_A, d_out=6), run=_run_sequence, no_grad=()
)


def _run_outer(m):
    b = _batch(lengths=[8, 5, 3, 6])
    g = torch.Generator().manual_seed(4)
    return m(torch.randn(4, 8, 6, generator=g, requires_grad=True), b.acoustic, b.mask)


EXAMPLES["text_based_outer_product"] = dict(
    build=lambda: fusionkit.create("text_based_outer_product"), run=_run_outer, no_grad=()
)
EXAMPLES["outer_product_cnn"] = dict(
    build=lambda: fusionkit.create("outer_product_cnn", height=8, width=6, d_out=3),
    run=lambda m: m(torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(5))),
    no_grad=(),
)
EXAMPLES["projected_lstm"] = dict(
    build=lambda: fusionkit.create("projected_lstm", d_in=D_A, d_hidden=6), run=_run_sequence, no_grad=()
)
EXAMPLES["vector_outer_product"] = dict(
    build=lambda: fusionkit.create("vector_outer_product"),
    run=lambda m: m(*(v.requires_grad_() for v in _vectors(6, 5, seed=6))), no_grad=()
)
EXAMPLES["iccn_product_cnn"] = dict(
    build=lambda: fusionkit.create("iccn_product_cnn", height=9, width=7, d_out=3),
    run=lambda m: m(torch.randn(4, 9, 7, generator=torch.Generator().manual_seed(5))),
    no_grad=(),
)
EXAMPLES["iccn_regressor"] = dict(
    build=lambda: fusionkit.create("iccn_regressor", d_in=8, d_hidden=4),
    run=lambda m: m(_vectors(8, seed=7)[0]),
    no_grad=(),
)
EXAMPLES["dcca_loss"] = dict(build=lambda: fusionkit.create("dcca_loss"), run=lambda m: m(*_pair(6, 4)), no_grad=())
