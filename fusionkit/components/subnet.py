"""``subnet`` — the pre-fusion sub-network of TFN and LMF for time-averaged audio / visual vectors.

Follows ``SubNet`` in the authors' ``model.py`` (Justin1904/TensorFusionNetworks, identical in
Justin1904/Low-rank-Multimodal-Fusion): ``BatchNorm1d → Dropout → (Linear → ReLU) × 3``, with the authors'
module names (``norm``, ``drop``, ``linear_1..3``) so that their weights load one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.registry import register


@register("subnet", kind="adapter")
class SubNet(nn.Module):
    """``BatchNorm1d(d_in) → Dropout → ReLU(Linear) → ReLU(Linear) → ReLU(Linear)``, ``d_in → d_hidden``.

    A training batch of a single sample (e.g. the last, incomplete batch of an epoch) has no batch statistics: it
    is normalised with the running statistics, which it leaves unchanged (the authors' code would fail there).
    """

    def __init__(self, *, d_in: int, d_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_in <= 0 or d_hidden <= 0:
            raise ValueError(f"subnet needs positive sizes, got d_in={d_in}, d_hidden={d_hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"subnet dropout must be in [0, 1), got {dropout}")
        self.d_in = d_in
        self.norm = nn.BatchNorm1d(d_in)
        self.drop = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(d_in, d_hidden)
        self.linear_2 = nn.Linear(d_hidden, d_hidden)
        self.linear_3 = nn.Linear(d_hidden, d_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, d_in)`` one vector per sample (e.g. a masked time average) → ``(B, d_hidden)``."""
        if x.dim() != 2:
            raise ValueError(
                f"subnet expects one vector per sample (B, d_in), got shape {tuple(x.shape)}; average a (B, T, d) "
                f"sequence over time first (fusionkit.components.masked_mean)"
            )
        if x.shape[-1] != self.d_in:
            raise ValueError(f"subnet was built for d_in={self.d_in}, got vectors of size {x.shape[-1]}")
        if self.training and x.shape[0] == 1:
            norm = self.norm
            normed = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        else:
            normed = self.norm(x)
        y = self.drop(normed)
        y = F.relu(self.linear_1(y))
        y = F.relu(self.linear_2(y))
        return F.relu(self.linear_3(y))


TEXT_POOLING = ("mean", "cls")


@register("text_subnet", kind="adapter")
class TextSubNet(nn.Module):
    """The "(B)" text path of TFN(B) / LMF(B): pooled BERT last layer → Dropout → Linear to ``d_out``.

    It replaces the authors' ``TextSubNet`` (GloVe → LSTM → Dropout → ``linear_1``): the LSTM's final state
    becomes a pooled BERT vector, the Dropout and ``linear_1`` are kept. ``pooling``: ``"mean"`` (masked mean
    over the real word pieces, [CLS]/[SEP] included, as MISA's BERT path) or ``"cls"`` (the [CLS] vector).
    """

    def __init__(self, *, d_in: int, d_out: int, dropout: float = 0.0, pooling: str = "mean") -> None:
        super().__init__()
        if d_in <= 0 or d_out <= 0:
            raise ValueError(f"TextSubNet needs positive sizes, got d_in={d_in}, d_out={d_out}")
        if pooling not in TEXT_POOLING:
            raise ValueError(f"unknown text pooling {pooling!r}; expected one of {', '.join(TEXT_POOLING)}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(d_in, d_out)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden``: ``(B, T, d_in)``; ``mask``: ``(B, T)`` bool, True = real token → ``(B, d_out)``."""
        pooled = masked_mean(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
        return self.linear_1(self.dropout(pooled))
