"""The restitution block of MHMF-BERT (eq. 6–10): split what the text adds to the memory into a relevant and
an irrelevant part with a channel attention over the residual."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.registry import register


class RestitutionOutput(NamedTuple):
    """fused: ``(B, T, d)`` = ``G̃ + R+``; relevant: ``(B, T, d)`` ``R+ = a·R``;
    irrelevant: ``(B, T, d)`` ``R− = (1 − a)·R``; attention: ``(B, d)`` channel weights ``a`` in (0, 1)."""

    fused: torch.Tensor
    relevant: torch.Tensor
    irrelevant: torch.Tensor
    attention: torch.Tensor


@register("restitution", kind="fusion")
class Restitution(nn.Module):
    """``R = H_t − G̃``; ``a = σ(W2 ReLU(W1 AvgPool_T(R)))``; ``R+ = aR``, ``R− = (1−a)R``; ``fused = G̃ + R+``.

    ``AvgPool_T`` is a masked mean over the real tokens, so ``a`` is one channel gate per sample ``(B, d)``;
    ``W1: d → d / reduction`` and ``W2: d / reduction → d`` form a squeeze-and-excitation bottleneck.

    ``d_text``: width of ``H_t`` when it differs from the memory width ``d`` (e.g. a 768-wide BERT layer and a
    128-wide fusion). ``H_t`` is then first projected to ``d`` by a linear layer, so ``R`` is computed in the
    fusion width: ``R = W_t H_t − G̃``.

    ``gate_init``: ``None`` keeps PyTorch's default initialisation of the last layer's bias (so ``a ≈ 0.5`` at the
    start); a value in (0, 1) sets that bias to ``logit(gate_init)``, so the gate starts near ``gate_init``.
    ``gate_lr_scale``: learning-rate multiplier of the gate's parameters (W1, W2) in fusionkit's optimizer
    (:func:`fusionkit.training.optim.lr_scales`); it changes no computation.
    """

    def __init__(self, *, dim: int, d_text: int | None = None, reduction: int = 4,
                 gate_init: float | None = None, gate_lr_scale: float = 1.0) -> None:
        super().__init__()
        if not gate_lr_scale > 0:
            raise ValueError(f"gate_lr_scale must be positive, got {gate_lr_scale}")
        if gate_init is not None and not 0 < gate_init < 1:
            raise ValueError(f"gate_init must lie strictly between 0 and 1 (the gate is a sigmoid), got {gate_init}")
        if dim <= 0 or reduction <= 0:
            raise ValueError(f"dim and reduction must be positive, got dim={dim}, reduction={reduction}")
        if dim // reduction < 1:
            raise ValueError(f"reduction={reduction} leaves no hidden unit for dim={dim}; use reduction <= {dim}")
        if d_text is not None and d_text <= 0:
            raise ValueError(f"d_text must be positive, got d_text={d_text}")
        self.text_proj = nn.Linear(d_text, dim) if d_text is not None and d_text != dim else nn.Identity()
        self.gate = nn.Sequential(
            nn.Linear(dim, dim // reduction), nn.ReLU(), nn.Linear(dim // reduction, dim), nn.Sigmoid()
        )
        self.gate.lr_scale = float(gate_lr_scale)  # read by fusionkit.training.optim.param_groups
        if gate_init is not None:  # centre the gate at a = gate_init instead of ≈ 0.5
            nn.init.constant_(self.gate[2].bias, math.log(gate_init / (1 - gate_init)))

    def forward(
        self, text: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None
    ) -> RestitutionOutput:
        """
        Args:
            text: ``(B, T, d_text)`` text hidden states ``H_t``, or ``(B, d_text)`` one text vector per sample
                (broadcast over ``T``; used when the streams are not aligned to the word pieces).
            memory: ``(B, T, d)`` GRU memory ``G̃``.
            mask: ``(B, T)`` bool, True = real token (of ``memory``); only real tokens enter the pooled gate.
        Returns:
            :class:`RestitutionOutput` (``fused``, ``relevant``, ``irrelevant`` ``(B, T, d)``; ``attention (B, d)``).
        """
        text = self.text_proj(text)
        if text.dim() == 2:
            text = text.unsqueeze(1)
        residual = text - memory
        attention = self.gate(masked_mean(residual, mask))
        gate = attention.unsqueeze(1)
        relevant = gate * residual
        irrelevant = (1 - gate) * residual
        return RestitutionOutput(fused=memory + relevant, relevant=relevant, irrelevant=irrelevant, attention=attention)
