"""Deep CCA objective (Andrew, Arora, Bilmes, Livescu, "Deep Canonical Correlation Analysis", ICML 2013).

For two views ``H1 (N, o1)``, ``H2 (N, o2)`` of the same ``N`` samples (a mini-batch), with centred ``H̄``:

    Σ11 = H̄1ᵀ H̄1 / (N − 1) + r1 I,   Σ22 = H̄2ᵀ H̄2 / (N − 1) + r2 I,   Σ12 = H̄1ᵀ H̄2 / (N − 1)
    T   = Σ11^(-1/2) Σ12 Σ22^(-1/2)     (computed with Cholesky factors, same singular values)
    corr(H1, H2) = Σ of the ``k`` largest singular values of ``T`` (all of them: the trace norm ‖T‖_tr)

The singular values of ``T`` are the (regularised) canonical correlations of the two views; DCCA maximises
their sum, so the loss is its negative. ``r1``, ``r2`` > 0 are Andrew et al.'s regularisation, which keeps
``Σ11``/``Σ22`` invertible when a mini-batch holds fewer samples than dimensions. A library was considered
(``cca-zoo``): its deep variants need PyTorch Lightning and the package pulls scikit-learn ≥ 1.8 and tensorly,
too heavy for one objective, so it is written here and tested against a closed-form CCA.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.registry import register


def canonical_correlations(h1: torch.Tensor, h2: torch.Tensor, *, r1: float = 1e-3, r2: float = 1e-3,
                           eps: float = 1e-9) -> torch.Tensor:
    """Regularised canonical correlations of ``h1 (N, o1)`` and ``h2 (N, o2)``, descending, ``(min(o1, o2),)``.

    ``Σ^(-1/2)`` is replaced by the inverse Cholesky factor ``L⁻¹`` (``Σ = L Lᵀ``): ``L⁻¹ = Q Σ^(-1/2)`` with
    ``Q`` orthogonal, so ``L1⁻¹ Σ12 L2⁻ᵀ`` has the singular values of ``T``, and its gradient stays finite when
    a mini-batch has fewer samples than dimensions (an eigendecomposition's gradient is not, with repeated
    eigenvalues). Computed in float64 (the matrices are ``o × o``: small); differentiable. ``eps`` is added to
    the diagonal of ``Σ11``, ``Σ22`` so that they stay positive definite when ``r = 0``.
    """
    if h1.dim() != 2 or h2.dim() != 2 or h1.shape[0] != h2.shape[0]:
        raise ValueError(f"dcca_loss compares two views (N, o1) and (N, o2) of the same samples, got "
                         f"{tuple(h1.shape)} and {tuple(h2.shape)}")
    n = h1.shape[0]
    if n < 2:
        raise ValueError(f"dcca_loss needs at least 2 samples to estimate covariances, got {n}")
    if r1 < 0 or r2 < 0:
        raise ValueError(f"dcca_loss regularisation must be ≥ 0, got r1={r1}, r2={r2}")
    x, y = h1.double(), h2.double()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    scale = 1.0 / (n - 1)
    eye1 = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    eye2 = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
    s11 = scale * x.T @ x + (r1 + eps) * eye1
    s22 = scale * y.T @ y + (r2 + eps) * eye2
    s12 = scale * x.T @ y
    l1 = torch.linalg.cholesky(s11)
    l2 = torch.linalg.cholesky(s22)
    left = torch.linalg.solve_triangular(l1, s12, upper=False)  # L1⁻¹ Σ12
    t = torch.linalg.solve_triangular(l2, left.T, upper=False).T  # (L2⁻¹ (L1⁻¹ Σ12)ᵀ)ᵀ = L1⁻¹ Σ12 L2⁻ᵀ
    return torch.linalg.svdvals(t)


@register("dcca_loss", kind="loss")
class DCCALoss(nn.Module):
    """Negative total canonical correlation (Andrew et al., 2013) of two views, ``(N, o1) × (N, o2) → scalar``.

    ``top_k``: sum only the ``k`` largest correlations (``None``: all, the trace norm). ``mean=True`` divides the
    sum by the number of correlations summed, so the loss lies in ``[−1, 0]`` whatever the width (same
    optimum, a scale that does not grow with the embedding size).
    """

    def __init__(self, *, r1: float = 1e-3, r2: float = 1e-3, top_k: int | None = None, mean: bool = False,
                 eps: float = 1e-9) -> None:
        super().__init__()
        if r1 < 0 or r2 < 0:
            raise ValueError(f"dcca_loss regularisation must be ≥ 0, got r1={r1}, r2={r2}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"dcca_loss top_k must be ≥ 1 or None, got {top_k}")
        self.r1, self.r2, self.top_k, self.mean, self.eps = r1, r2, top_k, mean, eps

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """``h1 (N, o1)``, ``h2 (N, o2)``: the two views of one batch → ``−Σ_k ρ_k`` (or its mean), in ``h1``'s dtype."""
        rho = canonical_correlations(h1, h2, r1=self.r1, r2=self.r2, eps=self.eps)
        if self.top_k is not None:
            rho = rho[: self.top_k]
        total = rho.mean() if self.mean else rho.sum()
        return (-total).to(h1.dtype)
