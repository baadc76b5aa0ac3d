"""``low_rank_fusion`` — Low-rank Multimodal Fusion (Liu, Shen et al., ACL 2018), any number of modalities.

LMF computes the TFN fusion tensor followed by a linear map *without* forming the tensor: the weight of that
linear map is constrained to rank ``r``, ``W = Σ_r ⊗_m W_m^(r)``, so that

    h = Σ_r w_r · Π_m (ẑ_m W_m^(r)) + b,      ẑ_m = [1; z_m]

(the product over modalities is element-wise). Parameters and their shapes follow the authors' ``LMF`` in
``model.py`` (Justin1904/Low-rank-Multimodal-Fusion): one factor ``(r, d_m + 1, d_out)`` per modality,
``fusion_weights (1, r)``, ``fusion_bias (1, d_out)``, Xavier-normal initialisation of factors and weights, zero
bias, and the 1 prepended to each vector as in TFN.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fusionkit.components.tensor_fusion import check_dims, check_inputs, prepend_one
from fusionkit.registry import register


@register("low_rank_fusion", kind="fusion")
class LowRankFusion(nn.Module):
    """``h = Σ_r w_r Π_m ([1; z_m] W_m^(r)) + b`` with modality-specific rank-``r`` factors.

    Args:
        dims: size ``d_m`` of each modality vector, in the order they are passed to ``forward``.
        d_out: output size (LMF on CMU-MOSI: 1, the sentiment score itself).
        rank: number of rank-one terms ``r`` (LMF on CMU-MOSI: 4).

    ``factors[m]`` is the authors' ``audio_factor`` / ``video_factor`` / ``text_factor`` for their order.
    """

    def __init__(self, *, dims: Sequence[int], d_out: int, rank: int = 4) -> None:
        super().__init__()
        self.dims = check_dims(dims, "low_rank_fusion")
        if d_out <= 0 or rank <= 0:
            raise ValueError(f"low_rank_fusion needs positive d_out and rank, got d_out={d_out}, rank={rank}")
        self.d_out = d_out
        self.rank = rank
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(rank, d + 1, d_out)) for d in self.dims)
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.empty(1, d_out))
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        """``d_out`` (the width a following layer reads, as ``tensor_fusion.out_dim``)."""
        return self.d_out

    def reset_parameters(self) -> None:
        for factor in self.factors:
            nn.init.xavier_normal_(factor)
        nn.init.xavier_normal_(self.fusion_weights)
        nn.init.zeros_(self.fusion_bias)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            *xs: one ``(B, d_m)`` vector per modality, in the order of ``dims``.
        Returns:
            ``(B, d_out)``.
        """
        check_inputs(xs, self.dims, "low_rank_fusion")
        product = None
        for x, factor in zip(xs, self.factors):
            projected = torch.einsum("bi,rio->rbo", prepend_one(x), factor)
            product = projected if product is None else product * projected
        return torch.einsum("r,rbo->bo", self.fusion_weights[0], product) + self.fusion_bias
