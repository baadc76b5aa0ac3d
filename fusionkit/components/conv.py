"""Convolutional encoders of ICCN (Sun et al., AAAI 2020): ``temporal_conv`` over word sequences and
``outer_product_cnn`` over the text-based audio / video matrices."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.checks import check_dropout, check_positive
from fusionkit.registry import register


@register("temporal_conv", kind="adapter")
class TemporalConv(nn.Module):
    """1-D convolution over time, ``(B, T, d_in) → (B, T, d_out)``, "same" length, then ReLU.

    Padded steps are zeroed before the convolution and in the output, so a real step's output does not
    depend on the amount of padding (a real neighbour that is absent and a padded one both read as zero).
    """

    def __init__(self, *, d_in: int, d_out: int, kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive(d_in=d_in, d_out=d_out, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"temporal_conv keeps the sequence length: kernel_size must be odd, got {kernel_size}")
        check_dropout(dropout=dropout)
        self.d_in, self.d_out = d_in, d_out
        self.conv = nn.Conv1d(d_in, d_out, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, T, d_in)``; ``mask (B, T)`` bool, True = real token → ``(B, T, d_out)``, zero at padding."""
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"temporal_conv was built for (B, T, {self.d_in}) inputs, got {tuple(x.shape)}")
        keep = mask.unsqueeze(-1).to(x.dtype)
        y = self.conv((x * keep).transpose(1, 2)).transpose(1, 2)
        return self.dropout(F.relu(y)) * keep


@register("outer_product_cnn", kind="adapter")
class OuterProductCNN(nn.Module):
    """2-D CNN over a ``(B, H, W)`` matrix → ``(B, d_out)``: per stage ``Conv2d(k, same) → ReLU → MaxPool(2)``,
    then flatten → Dropout → Linear.

    ``channels`` gives the output channels of each stage (the input has one); ``height`` × ``width`` is the
    matrix size (``d_text × d_audio`` for ICCN), each halved (floor) by every stage.
    """

    def __init__(self, *, height: int, width: int, d_out: int, channels: tuple[int, ...] = (8, 16),
                 kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive(height=height, width=width, d_out=d_out, kernel_size=kernel_size)
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) <= 0:
            raise ValueError(f"outer_product_cnn needs at least one positive channel count, got channels={channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"outer_product_cnn uses 'same' convolutions: kernel_size must be odd, got {kernel_size}")
        check_dropout(dropout=dropout)
        h, w = height, width
        for _ in channels:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(
                f"outer_product_cnn: a {height}×{width} matrix is too small for {len(channels)} pooling stages; "
                f"use fewer channels entries or larger sizes"
            )
        self.height, self.width = height, width
        stages = []
        c_in = 1
        for c_out in channels:
            stages += [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(c_in * h * w, d_out)

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix (B, height, width)`` → ``(B, d_out)``."""
        if matrix.dim() != 3 or matrix.shape[1:] != (self.height, self.width):
            raise ValueError(
                f"outer_product_cnn was built for (B, {self.height}, {self.width}) matrices, got {tuple(matrix.shape)}"
            )
        y = self.stages(matrix.unsqueeze(1))
        return self.proj(self.dropout(y.flatten(1)))
