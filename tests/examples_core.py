"""Small runnable examples of the core components, for the registry-wide test (``tests/test_all_components.py``).

Each entry builds a component with small dimensions, runs it on deterministic inputs built inside ``run`` and
names the parameter prefixes that legitimately receive no gradient (``no_grad``).
"""
from __future__ import annotations

import torch

import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config

EXAMPLES: dict[str, dict] = {}


def _seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


EXAMPLES["self_attention_adapter"] = dict(
    build=lambda: fusionkit.create("self_attention_adapter", d_in=6, d_model=8, heads=2),
    run=lambda m: m(_seeded(2, 5, 6), _mask([5, 3], 5)),
    no_grad=(),
)

EXAMPLES["cross_attention_adapter"] = dict(
    build=lambda: fusionkit.create("cross_attention_adapter", d_model=8, d_source=12, heads=2),
    run=lambda m: m(_seeded(2, 5, 8), _seeded(2, 7, 12, seed=1), _mask([5, 3], 5), _mask([7, 4], 7)),
    no_grad=(),
)

EXAMPLES["gru_memory"] = dict(
    build=lambda: fusionkit.create("gru_memory", dim=8),
    run=lambda m: m(_seeded(2, 5, 8), _seeded(2, 5, 8, seed=1)),
    no_grad=(),
)

EXAMPLES["restitution"] = dict(
    build=lambda: fusionkit.create("restitution", dim=8, d_text=12, reduction=2),
    run=lambda m: m(_seeded(2, 5, 12), _seeded(2, 5, 8, seed=1), _mask([5, 3], 5)),
    no_grad=(),
)

EXAMPLES["restitution_loss"] = dict(
    build=lambda: fusionkit.create("restitution_loss"),
    run=lambda m: m(
        _seeded(4, 5, 8).requires_grad_(),
        _seeded(4, 5, 8, seed=1).requires_grad_(),
        _seeded(4, 5, 8, seed=2).requires_grad_(),
        torch.tensor([1.5, -0.5, 2.0, -2.5]),
        _mask([5, 3, 4, 2], 5),
    ),
    no_grad=(),
)

EXAMPLES["gated_fusion"] = dict(
    build=lambda: fusionkit.create("gated_fusion", dim=8),
    run=lambda m: m(*_seeded(4, 2, 5, 8).unbind(0)),
    no_grad=(),
)

EXAMPLES["regression_head"] = dict(
    build=lambda: fusionkit.create("regression_head", d_in=8, d_hidden=4),
    run=lambda m: m(_seeded(3, 8)),
    no_grad=(),
)


def _run_bert(m):
    batch = random_batch(batch_size=2, seq_len=6, seed=0)
    return m(batch.input_ids, batch.mask, batch.token_type_ids)


EXAMPLES["bert_encoder"] = dict(
    build=lambda: fusionkit.create("bert_encoder", config=tiny_bert_config(num_layers=2)),
    run=_run_bert,
    no_grad=(),
)

EXAMPLES["text"] = dict(
    build=lambda: fusionkit.create("text", bert_config=tiny_bert_config(num_layers=2)),
    run=lambda m: m(random_batch(batch_size=3, seq_len=6, seed=0)),
    no_grad=(),
)

EXAMPLES["mhmf"] = dict(
    # training mode (the default after construction) with labels, so the restitution losses are part of the graph;
    # the paper's configuration: the fusion at the encoder's width (32), no projection of the BERT layers
    build=lambda: fusionkit.create("mhmf", bert_config=tiny_bert_config(num_layers=4), d_acoustic=5, d_visual=3),
    run=lambda m: m(random_batch(batch_size=4, seq_len=7, d_acoustic=5, d_visual=3, seed=0)),
    no_grad=(),
)

EXAMPLES["mhmf_small"] = dict(
    build=lambda: fusionkit.create("mhmf_small", bert_config=tiny_bert_config(num_layers=4), d_acoustic=5, d_visual=3),
    run=lambda m: m(random_batch(batch_size=4, seq_len=7, d_acoustic=5, d_visual=3, seed=0)),
    no_grad=(),
)
