"""Small in-memory fixtures for tests and smoke runs: a tiny random BERT and random batches."""
from __future__ import annotations

import torch

from fusionkit.data.batch import MultimodalBatch

TINY_VOCAB = 30522  # the bundled MiniLM tokenizer's vocabulary, so its ids are valid for the tiny model


def tiny_bert_config(*, hidden_size: int = 32, num_layers: int = 4, heads: int = 4):
    """A randomly initialised BERT config small enough for unit tests (built in memory, no files)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
    )


def random_batch(
    *,
    batch_size: int = 4,
    seq_len: int = 9,
    d_acoustic: int = 74,
    d_visual: int = 47,
    seed: int = 0,
    lengths: list[int] | None = None,
    labels: bool = True,
) -> MultimodalBatch:
    """A random aligned batch; ``lengths`` (each ≥ 2 for [CLS]/[SEP]) sets the real tokens per sample."""
    g = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = torch.randint(2, seq_len + 1, (batch_size,), generator=g).tolist()
        lengths[0] = seq_len
    mask = torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.randint(1000, TINY_VOCAB, (batch_size, seq_len), generator=g) * mask
    last = torch.tensor(lengths) - 1
    ids[:, 0] = 101
    ids[torch.arange(batch_size), last] = 102
    feat_mask = mask.clone()
    feat_mask[:, 0] = False
    feat_mask[torch.arange(batch_size), last] = False
    acoustic = torch.randn(batch_size, seq_len, d_acoustic, generator=g) * feat_mask[..., None]
    visual = torch.randn(batch_size, seq_len, d_visual, generator=g) * feat_mask[..., None]
    label = (torch.rand(batch_size, generator=g) * 6 - 3) if labels else None
    return MultimodalBatch(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=torch.zeros_like(ids),
        acoustic=acoustic,
        visual=visual,
        label=label,
        ids=[f"sample_{i}" for i in range(batch_size)],
    )
