"""``text_based_outer_product`` — ICCN's text-based audio / text-based video matrices.

Sun, Sarma, Sethares, Liang, "Learning Relationships between Text, Audio, and Video via Deep Canonical
Correlation for Multimodal Language Analysis", AAAI 2020: the outer product of the text representation with
the audio (or video) representation of the same word, accumulated over the utterance, gives one
``d_text × d_other`` matrix per utterance.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.registry import register


@register("text_based_outer_product", kind="fusion")
class TextBasedOuterProduct(nn.Module):
    """``F = (1 / n) Σ_{t real} h_t ⊗ x_t``: the word-aligned outer products, averaged over the real steps.

    No parameters. Averaging (rather than summing) keeps the scale independent of the utterance length.
    """

    def forward(self, text: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``text (B, T, d_t)``, ``other (B, T, d_o)`` word-aligned; ``mask (B, T)`` bool, True = real token →
        ``(B, d_t, d_o)``. Padded steps contribute nothing."""
        if text.dim() != 3 or other.dim() != 3 or text.shape[:2] != other.shape[:2]:
            raise ValueError(
                f"text_based_outer_product needs word-aligned sequences (B, T, d_t) and (B, T, d_o), got "
                f"{tuple(text.shape)} and {tuple(other.shape)}"
            )
        if mask.shape != text.shape[:2]:
            raise ValueError(f"mask must be (B, T) = {tuple(text.shape[:2])}, got {tuple(mask.shape)}")
        weights = mask.to(text.dtype)
        count = weights.sum(1).clamp_min(1.0)
        weighted = text * (weights / count[:, None]).unsqueeze(-1)
        return torch.einsum("bti,btj->bij", weighted, other)


@register("vector_outer_product", kind="fusion")
class VectorOuterProduct(nn.Module):
    """``F = t ⊗ x``: the outer product of an utterance-level text vector and another modality's vector.

    The ICCN authors' text-based audio / video (their ``fs_t.unsqueeze(2) * fs_a.unsqueeze(1)``). No parameters.
    """

    def forward(self, text: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``text (B, d_t)``, ``other (B, d_o)`` → ``(B, d_t, d_o)``."""
        if text.dim() != 2 or other.dim() != 2 or text.shape[0] != other.shape[0]:
            raise ValueError(f"vector_outer_product takes two (B, d) vectors of the same batch, got "
                             f"{tuple(text.shape)} and {tuple(other.shape)}")
        return text.unsqueeze(2) * other.unsqueeze(1)
