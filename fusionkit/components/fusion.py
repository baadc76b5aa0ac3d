"""Gated fusion of the vision and audio branches of MHMF-BERT (eq. 11–13)."""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.registry import register


@register("gated_fusion", kind="fusion")
class GatedFusion(nn.Module):
    """``g_m = ReLU(W_m [G_m; H_m] + b_m)`` for m ∈ {vision, audio}; ``F = g_v ⊙ G_v + g_a ⊙ G_a``.

    ``G_m`` is the branch output after the last fusion stage, ``H_m`` the branch's unimodal (SA) features.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got dim={dim}")
        self.gate_vision = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        self.gate_audio = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())

    def forward(
        self,
        g_vision: torch.Tensor,
        h_vision: torch.Tensor,
        g_audio: torch.Tensor,
        h_audio: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            g_vision, h_vision, g_audio, h_audio: ``(B, T, d)`` each (any leading shape ``(..., d)`` works: the
                block is position-wise, so no mask is needed and padding never reaches real positions).
        Returns:
            ``(B, T, d)`` fused sequence ``F``.
        """
        g_v = self.gate_vision(torch.cat([g_vision, h_vision], dim=-1))
        g_a = self.gate_audio(torch.cat([g_audio, h_audio], dim=-1))
        return g_v * g_vision + g_a * g_audio
