"""``tensor_fusion`` — the Tensor Fusion layer of TFN (Zadeh et al., EMNLP 2017), for any number of modalities.

Each modality vector ``z_m`` is extended with a constant 1, ``ẑ_m = [1; z_m]``, and the fused vector is the
flattened outer product ``ẑ_1 ⊗ ẑ_2 ⊗ … ⊗ ẑ_n`` of size ``Π_m (d_m + 1)``: it holds every unimodal, bimodal
and trimodal product. As in the authors' ``model.py`` (Justin1904/TensorFusionNetworks) the 1 is *prepended*
and the first modality varies slowest in the flattened index, so a post-fusion layer trained there keeps its
meaning here (the authors' order is audio, video, text).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fusionkit.registry import register


def prepend_one(x: torch.Tensor) -> torch.Tensor:
    """``(B, d)`` → ``(B, d + 1)`` with a constant 1 in front (TFN's / LMF's ``[1; z]``)."""
    return F.pad(x, (1, 0), value=1.0)


def check_dims(dims: Sequence[int], what: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if len(dims) < 2:
        raise ValueError(f"{what} fuses at least two modalities, got dims={dims}")
    if any(d <= 0 for d in dims):
        raise ValueError(f"{what} needs positive modality sizes, got dims={dims}")
    return dims


def check_inputs(xs: Sequence[torch.Tensor], dims: tuple[int, ...], what: str) -> None:
    got = tuple(x.shape[-1] for x in xs)
    if got != dims or any(x.dim() != 2 for x in xs):
        raise ValueError(
            f"{what} was built for {len(dims)} vectors (B, d) with d = {dims}, got shapes "
            f"{[tuple(x.shape) for x in xs]}"
        )


@register("tensor_fusion", kind="fusion")
class TensorFusion(nn.Module):
    """Flattened outer product of ``[1; z_m]`` over the modalities; no parameters.

    Args:
        dims: size ``d_m`` of each modality vector, in the order they are passed to ``forward``.
    """

    def __init__(self, *, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = check_dims(dims, "tensor_fusion")

    @property
    def out_dim(self) -> int:
        """``Π_m (d_m + 1)``."""
        return math.prod(d + 1 for d in self.dims)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            *xs: one ``(B, d_m)`` vector per modality, in the order of ``dims``.
        Returns:
            ``(B, Π_m (d_m + 1))``; entry ``(i_1, …, i_n)`` (row-major, first modality slowest) is ``Π_m ẑ_m[i_m]``.
        """
        check_inputs(xs, self.dims, "tensor_fusion")
        fused = prepend_one(xs[0])
        for x in xs[1:]:
            fused = rearrange(torch.einsum("bi,bj->bij", fused, prepend_one(x)), "b i j -> b (i j)")
        return fused
