"""MISA's auxiliary losses (Hazarika, Zimmermann, Poria, ACM MM 2020): ``cmd_loss``, ``diff_loss``, ``recon_loss``.

Each follows the class of the same role in ``src/utils/functions.py`` of https://github.com/declare-lab/MISA
(``CMD``, ``DiffLoss``, ``MSE``); the model-level sums over modality pairs are in :mod:`baselines.misa`.
One numerical departure: the CMD's Euclidean norms use ``torch.linalg.vector_norm`` instead of
``sum(...) ** 0.5``, which has the same value but a zero (not NaN) gradient when two moments coincide.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from fusionkit.registry import register


def _check_pair(x1: torch.Tensor, x2: torch.Tensor, what: str) -> None:
    if x1.dim() != 2 or x2.dim() != 2 or x1.shape[0] != x2.shape[0]:
        raise ValueError(
            f"{what} compares two batches of vectors (B, d1) and (B, d2), got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )


def central_moment_discrepancy(x1: torch.Tensor, x2: torch.Tensor, n_moments: int = 5) -> torch.Tensor:
    """CMD (Zellinger et al., 2017) as in MISA: ``‖E x1 − E x2‖ + Σ_{k=2..K} ‖c_k(x1) − c_k(x2)‖``.

    ``c_k`` is the k-th central moment per dimension over the batch; ``x1``, ``x2``: ``(B, d)`` → scalar.
    As in MISA (unlike Zellinger et al.'s original) the terms are not divided by powers of the feature range.
    """
    if x1.dim() != 2 or x2.dim() != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"cmd_loss needs two (B, d) batches of one width d, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if n_moments < 1:
        raise ValueError(f"n_moments must be ≥ 1, got {n_moments}")
    mean1, mean2 = x1.mean(0), x2.mean(0)
    centred1, centred2 = x1 - mean1, x2 - mean2
    total = torch.linalg.vector_norm(mean1 - mean2)
    for k in range(2, n_moments + 1):
        total = total + torch.linalg.vector_norm(centred1.pow(k).mean(0) - centred2.pow(k).mean(0))
    return total


def soft_orthogonality(x1: torch.Tensor, x2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MISA's difference loss: mean squared entry of ``X̂1ᵀ X̂2`` for batch-centred, row-normalised ``X1``, ``X2``.

    ``x1``: ``(B, d1)``, ``x2``: ``(B, d2)`` → scalar, 0 when the centred batches span orthogonal subspaces of
    ``R^B``. As in the authors' code the row norms are detached and ``eps`` is added to them.
    """
    _check_pair(x1, x2, "diff_loss")
    x1 = x1 - x1.mean(0, keepdim=True)
    x2 = x2 - x2.mean(0, keepdim=True)
    x1 = x1 / (x1.norm(p=2, dim=1, keepdim=True).detach() + eps)
    x2 = x2 / (x2.norm(p=2, dim=1, keepdim=True).detach() + eps)
    return (rearrange(x1, "b i -> i b") @ x2).pow(2).mean()


@register("cmd_loss", kind="loss")
class CMDLoss(nn.Module):
    """Central moment discrepancy between two batches (MISA's similarity loss), ``n_moments`` = 5 in MISA."""

    def __init__(self, *, n_moments: int = 5) -> None:
        super().__init__()
        if n_moments < 1:
            raise ValueError(f"n_moments must be ≥ 1, got {n_moments}")
        self.n_moments = n_moments

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``x1``, ``x2``: ``(B, d)`` → scalar ≥ 0 (0 iff the first ``n_moments`` moments agree)."""
        return central_moment_discrepancy(x1, x2, self.n_moments)


@register("diff_loss", kind="loss")
class DiffLoss(nn.Module):
    """Soft orthogonality between two batches of representations (MISA's difference loss)."""

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``x1``: ``(B, d1)``, ``x2``: ``(B, d2)`` → scalar ≥ 0."""
        return soft_orthogonality(x1, x2, self.eps)


@register("recon_loss", kind="loss")
class ReconLoss(nn.Module):
    """Reconstruction loss as MISA's ``MSE``: ``Σ (target − pred)² / numel``; the target is not detached."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: same shape, e.g. ``(B, d)`` → scalar."""
        if pred.shape != target.shape:
            raise ValueError(f"recon_loss needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
        return (target - pred).pow(2).mean()
