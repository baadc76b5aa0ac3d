"""Gated fusion of the vision and audio branches of MHMF-BERT (eq. 11–13)."""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.registry import register


@register("gated_fusion", kind="fusion")
class GatedFusion(nn.Module):
    """``g_m = ReLU(W_m [G_m; H_m] + b_m)`` for m ∈ {vision, audio}; ``F = g_v ⊙ G_v + g_a ⊙ G_a``.

    ``G_m`` is the branch output after the last fusion stage, ``H_m`` the branch's unimodal (SA) features.
    ``branches``: the present ones; an absent branch has no gate and its term of ``F`` is absent.
    """

    def __init__(self, *, dim: int, branches: tuple[str, ...] = ("vision", "audio")) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got dim={dim}")
        branches = tuple(branches)
        if not branches or set(branches) - {"vision", "audio"} or len(set(branches)) != len(branches):
            raise ValueError(f"branches must be distinct names among ('vision', 'audio'), got {branches}")
        self.branches = tuple(b for b in ("vision", "audio") if b in branches)
        self.gate_vision = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU()) if "vision" in branches else None
        self.gate_audio = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU()) if "audio" in branches else None

    def forward(
        self,
        g_vision: torch.Tensor | None = None,
        h_vision: torch.Tensor | None = None,
        g_audio: torch.Tensor | None = None,
        h_audio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            g_vision, h_vision, g_audio, h_audio: ``(B, T, d)`` each (any leading shape ``(..., d)`` works: the
                block is position-wise, so no mask is needed and padding never reaches real positions); those of
                an absent branch are ``None``.
        Returns:
            ``(B, T, d)`` fused sequence ``F``.
        """
        given = tuple(b for b, x in (("vision", g_vision), ("audio", g_audio)) if x is not None)
        if given != self.branches:
            raise ValueError(f"gated_fusion was built for branches {self.branches}, got inputs for {given}")
        if self.gate_vision is None:
            return self.gate_audio(torch.cat([g_audio, h_audio], dim=-1)) * g_audio
        if self.gate_audio is None:
            return self.gate_vision(torch.cat([g_vision, h_vision], dim=-1)) * g_vision
        g_v = self.gate_vision(torch.cat([g_vision, h_vision], dim=-1))
        g_a = self.gate_audio(torch.cat([g_audio, h_audio], dim=-1))
        return g_v * g_vision + g_a * g_audio
